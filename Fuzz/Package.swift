// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for Postgate's parsers. Build and run them with `scripts/fuzz` (see README.md, "Fuzzing"):
//   swift build --package-path Fuzz --scratch-path .build-fuzz -c debug -Xswiftc -sanitize=fuzzer,address
// Each executable's main.swift hands its `LLVMFuzzerTestOneInput` to libFuzzer's driver (`LLVMFuzzerRunDriver`):
// SwiftPM links an executable's `main` to the module's own entry point, so libFuzzer's `main` never gets linked.
let fuzzTargets = ["FuzzPgOutput", "FuzzReplicationFrame", "FuzzJSON", "FuzzConfig", "FuzzInputState", "FuzzCDCState", "FuzzCatalog"]

let package = Package(
    name: "PostgateFuzz",
    platforms: [.macOS(.v13)],
    dependencies: [.package(name: "Postgate", path: "..")],
    targets: [
        .systemLibrary(name: "CLibFuzzer"),
        .target(
            name: "FuzzSupport",
            dependencies: ["CLibFuzzer", .product(name: "PostgateCore", package: "Postgate")]
        ),
    ] + fuzzTargets.map { name in
        .executableTarget(
            name: name,
            dependencies: ["FuzzSupport", .product(name: "PostgateCore", package: "Postgate")]
        )
    },
    swiftLanguageModes: [.v6]
)
