import CTunnelCipher
import Foundation
import Testing

/// The tunnel's AES-CTR (keystream made in bulk, XORed per call) against OpenSSL's AES-CTR.
@Suite struct TunnelCipherTests {
    static func random(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

    func apply(bulk: Bool, key: [UInt8], iv: [UInt8], data: [UInt8], chunk: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: data.count)
        let ok = out.withUnsafeMutableBufferPointer { o in
            postgate_tunnel_cipher_apply(bulk ? 1 : 0, key, key.count, iv, data, o.baseAddress, data.count, chunk)
        }
        return ok == 1 ? out : nil
    }

    @Test(arguments: [16, 24, 32])
    func bulkKeystreamEqualsOpenSSLInAnyCallSize(keyLength: Int) throws {
        let key = Self.random(keyLength)
        let data = Self.random(100_003)
        // An IV whose low 32 bits and then all 128 bits wrap within the data: the counter must carry
        // exactly as OpenSSL's does.
        let ivs: [[UInt8]] = [Self.random(16), [UInt8](repeating: 0, count: 12) + [0xff, 0xff, 0xff, 0xf0], [UInt8](repeating: 0xff, count: 15) + [0xf0]]
        for iv in ivs {
            let reference = try #require(apply(bulk: false, key: key, iv: iv, data: data, chunk: 0))
            #expect(zip(reference, data).contains { $0 != $1 }, "encryption changed the data")
            for chunk in [16, 1, 7, 4096, 5000, 8192 + 16, 100_003] {
                let bulk = try #require(apply(bulk: true, key: key, iv: iv, data: data, chunk: chunk))
                // The first differing offset, not the arrays: a failed comparison of 100 kB arrays would be diffed element by element.
                let firstDifference = bulk.indices.first { bulk[$0] != reference[$0] }
                #expect(firstDifference == nil, "key \(keyLength * 8) bits, calls of \(chunk) bytes, IV \(iv.suffix(4))")
            }
        }
    }

    @Test func aCopiedContextContinuesTheStreamOnItsOwn() throws {
        let key = Self.random(16), iv = Self.random(16), data = Self.random(20_000)
        let reference = try #require(apply(bulk: false, key: key, iv: iv, data: data, chunk: 0))
        for split in [0, 16, 4000, 4096, 12_345] {
            var out = [UInt8](repeating: 0, count: data.count)
            let ok = out.withUnsafeMutableBufferPointer { o in
                postgate_tunnel_cipher_apply_with_copy(key, key.count, iv, data, o.baseAddress, data.count, split)
            }
            #expect(ok == 1)
            #expect(out.indices.first { out[$0] != reference[$0] } == nil, "copied after \(split) bytes")
        }
    }

    @Test func libssh2ResolvesAESCTRToTheBulkCipher() {
        // libssh2 looks EVP_aes_*_ctr up through the same global scope as dlsym(RTLD_DEFAULT).
        #expect(postgate_tunnel_cipher_active() == 1)
    }
}
