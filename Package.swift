// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Postgate",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "postgate", targets: ["postgate"]),
        .library(name: "PostgateCore", targets: ["PostgateCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "CTunnelCipher",
            dependencies: ["COpenSSL"]
        ),
        // The async-signal-safe core of private files (see its header).
        .target(name: "CPrivateFiles"),
        .target(
            name: "PostgateCore",
            dependencies: [
                "CLibPQ", "CLibSSH2", "COpenSSL", "CTunnelCipher", "CPrivateFiles",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .executableTarget(
            name: "postgate",
            dependencies: [
                "PostgateCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "PostgateCoreTests",
            dependencies: ["PostgateCore", "CTunnelCipher", .product(name: "GRDB", package: "GRDB.swift")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
