import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Why an Entra token could not be had. Descriptions name the setting to check and never contain
/// the client secret, a key or a token.
public enum EntraError: Error, Sendable, CustomStringConvertible, UserFacingError {
    case unreachable(url: String, reason: String)
    case rejected(setting: String, detail: String)
    case malformed(reason: String)
    case credential(KeyError)

    public var description: String {
        switch self {
        case .unreachable(let url, let reason):
            return "Entra: cannot reach the token endpoint \(url): \(reason) [check setting `entra_authority_host`, the HTTPS_PROXY environment variable, and SSL_CERT_FILE if the endpoint uses a private CA]"
        case .rejected(let setting, let detail):
            return "Entra: the token request was refused: \(detail) [check setting `\(setting)`]"
        case .malformed(let reason):
            return "Entra: the token endpoint's answer is not a token response: \(reason) [check setting `entra_authority_host`]"
        case .credential(let k):
            return "Entra: \(k)"
        }
    }

    public var userMessage: String { description }
    public var failureType: String {
        if case .unreachable = self { return "transient_error" }
        return "config_error"
    }
}

/// Exchanges a service principal's credential for Azure Database for PostgreSQL access tokens
/// (OAuth2 client credentials) and caches each token until 80 % of its lifetime has passed, so
/// every new connection gets a token that is still valid.
public final class EntraTokenProvider: @unchecked Sendable {
    public static let scope = "https://ossrdbms-aad.database.windows.net/.default"
    /// Part of a token's lifetime after which a new one is fetched.
    public static let refreshFraction = 0.8

    enum Credential {
        case secret(Secret)
        case certificate(Certificate, PrivateKey)
    }

    let settings: EntraSettings
    let credential: Credential
    let logger: Logger
    private let lock = NSLock()
    private var cached: (token: Secret, refreshAt: Date)?

    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var registry: [String: EntraTokenProvider] = [:]

    /// The process-wide provider for a service principal, so every connection shares one cache.
    public static func shared(_ settings: EntraSettings, secret: Secret?, logger: Logger) throws(EntraError) -> EntraTokenProvider {
        let key = "\(settings.authorityHost)|\(settings.tenantID)|\(settings.clientID)"
        registryLock.lock()
        defer { registryLock.unlock() }
        if let p = registry[key] { return p }
        let p = try EntraTokenProvider(settings: settings, secret: secret, logger: logger)
        registry[key] = p
        return p
    }

    public init(settings: EntraSettings, secret: Secret?, logger: Logger) throws(EntraError) {
        self.settings = settings
        self.logger = logger
        if let certText = settings.clientCertificate, let keyText = settings.clientKey {
            do throws(KeyError) {
                let cert = try Certificate.pemChain(certText, setting: "entra_client_certificate")[0]
                let key = try PrivateKey.pem(keyText.exposedValue, passphrase: nil, setting: "entra_client_key")
                guard key.isRSA else {
                    throw KeyError.unsupported(setting: "entra_client_key", detail: "Entra client assertions are signed with RS256; the key must be RSA")
                }
                guard cert.matches(key) else {
                    throw KeyError.unsupported(setting: "entra_client_key", detail: "the key does not belong to `entra_client_certificate`")
                }
                credential = .certificate(cert, key)
            } catch {
                throw .credential(error)
            }
        } else if let secret {
            credential = .secret(secret)
        } else {
            throw .rejected(setting: "password", detail: "no client secret (`password`) and no certificate credential (`entra_client_certificate` with `entra_client_key`)")
        }
    }

    /// The token endpoint URL for the configured authority and tenant.
    public var tokenURL: String {
        var authority = settings.authorityHost
        while authority.hasSuffix("/") { authority.removeLast() }
        let tenant = settings.tenantID.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? settings.tenantID
        return "\(authority)/\(tenant)/oauth2/v2.0/token"
    }

    /// A valid access token, from the cache or freshly fetched.
    public func token() throws(EntraError) -> Secret {
        lock.lock()
        defer { lock.unlock() }
        if let c = cached, Date() < c.refreshAt { return c.token }
        let (token, lifetime) = try fetch()
        cached = (token, Date().addingTimeInterval(lifetime * Self.refreshFraction))
        logger.debug("Entra: obtained an access token valid for \(Int(lifetime)) s (refreshed after \(Int(lifetime * Self.refreshFraction)) s)")
        return token
    }

    private func fetch() throws(EntraError) -> (Secret, TimeInterval) {
        var form: [(String, String)] = [
            ("client_id", settings.clientID), ("scope", Self.scope), ("grant_type", "client_credentials"),
        ]
        switch credential {
        case .secret(let s):
            form.append(("client_secret", s.exposedValue))
        case .certificate(let cert, let key):
            form.append(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"))
            form.append(("client_assertion", try clientAssertion(cert: cert, key: key)))
        }
        let body = form.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")
        let url = tokenURL
        var request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url, method: .POST)
        } catch {
            throw .unreachable(url: url, reason: "not a valid URL")
        }
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        request.body = .string(body)
        let response: HTTPClient.Response
        do {
            response = try EntraHTTP.client.execute(request: request, deadline: .now() + .seconds(30)).wait()
        } catch {
            throw .unreachable(url: url, reason: EntraHTTP.describe(error))
        }
        let bytes = response.body.map { Array($0.readableBytesView) } ?? []
        guard let json = try? JSONParser.parse(bytes), case .object = json else {
            throw .malformed(reason: "HTTP \(response.status.code) with a body that is not JSON")
        }
        if response.status.code != 200 {
            throw Self.explain(status: Int(response.status.code), json)
        }
        guard let access = json["access_token"]?.stringValue, !access.isEmpty else {
            throw .malformed(reason: "no access_token in the answer")
        }
        var lifetime: TimeInterval = 3600
        switch json["expires_in"] {
        case .number(let n)?: lifetime = TimeInterval(n) ?? lifetime
        case .string(let s)?: lifetime = TimeInterval(s) ?? lifetime
        default: break
        }
        return (Secret(access), max(1, lifetime))
    }

    /// Maps an OAuth2 error answer to the setting that is wrong.
    static func explain(status: Int, _ json: JSONValue) -> EntraError {
        let error = json["error"]?.stringValue ?? "HTTP \(status)"
        let codes = json["error_codes"]?.arrayValue?.compactMap { $0.int64Value } ?? []
        let aadsts = codes.first.map { "AADSTS\($0)" } ?? ""
        let tag = aadsts.isEmpty ? error : "\(error), \(aadsts)"
        switch codes.first {
        case 7_000_215?, 7_000_222?:
            return .rejected(setting: "password", detail: "the client secret is wrong or expired (\(tag))")
        case 700_016?:
            return .rejected(setting: "entra_client_id", detail: "no application with this client id in the tenant (\(tag))")
        case 90_002?, 900_023?, 90_013?:
            return .rejected(setting: "entra_tenant_id", detail: "the tenant was not found (\(tag))")
        case 700_027?, 700_024?:
            return .rejected(setting: "entra_client_certificate", detail: "the client assertion was not accepted (\(tag)); is the certificate registered for the application?")
        default:
            if error == "invalid_client" { return .rejected(setting: "password", detail: "the client credential was not accepted (\(tag))") }
            return .rejected(setting: "entra_client_id", detail: tag)
        }
    }

    /// A client-assertion JWT (RS256) identifying the application by its certificate.
    func clientAssertion(cert: Certificate, key: PrivateKey) throws(EntraError) -> String {
        let now = Int64(Date().timeIntervalSince1970)
        let header: JSONValue = ["alg": "RS256", "typ": "JWT", "x5t": .string(Self.base64url(Digests.sha1(cert.der)))]
        let claims: JSONValue = [
            "aud": .string(tokenURL), "iss": .string(settings.clientID), "sub": .string(settings.clientID),
            "jti": .string(UUID().uuidString), "nbf": .number(String(now)), "iat": .number(String(now)),
            "exp": .number(String(now + 600)),
        ]
        let input = Self.base64url(Array(header.jsonText.utf8)) + "." + Self.base64url(Array(claims.jsonText.utf8))
        let bytes = Array(input.utf8)
        guard let sig = bytes.withUnsafeBytes({ key.sign($0, digest: .sha256) }) else {
            throw .credential(.unsupported(setting: "entra_client_key", detail: "signing the client assertion failed"))
        }
        return input + "." + Self.base64url(sig)
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func formEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

/// The one HTTP client for token requests: the system trust store plus `SSL_CERT_FILE`,
/// bounded timeouts, and the proxy from `HTTPS_PROXY` unless `NO_PROXY` excludes the host.
enum EntraHTTP {
    static let client: HTTPClient = {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .default
        if let extra = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !extra.isEmpty,
           FileManager.default.isReadableFile(atPath: extra) {
            tls.additionalTrustRoots = [.file(extra)]
        }
        var config = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(30)))
        // Fail a request at the first refused or untrusted connection instead of retrying until the deadline.
        config.connectionPool.retryConnectionEstablishment = false
        if let proxy = proxyServer() { config.proxy = proxy }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }()

    static func proxyServer() -> HTTPClient.Configuration.Proxy? {
        let env = ProcessInfo.processInfo.environment
        guard let raw = env["HTTPS_PROXY"] ?? env["https_proxy"], !raw.isEmpty,
              let url = URL(string: raw.contains("://") ? raw : "http://\(raw)"), let host = url.host else { return nil }
        return .server(host: host, port: url.port ?? 80)
    }

    static func describe(_ error: Error) -> String {
        if error is NIOSSLError || String(describing: error).contains("CERTIFICATE_VERIFY_FAILED") {
            return "TLS certificate verification failed; is the endpoint's CA trusted (system store, or SSL_CERT_FILE for a private CA)?"
        }
        if let e = error as? HTTPClientError {
            if e == .connectTimeout { return "connection timed out" }
            if e == .readTimeout || e == .deadlineExceeded { return "no answer in time" }
        }
        let text = String(describing: error)
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        if text.contains("certificate") || text.contains("handshake") { return "TLS failed; is the endpoint's CA trusted (system store or SSL_CERT_FILE)?" }
        if text.contains("lookup") || text.contains("resolve") || text.contains("DNS") { return "the host name does not resolve" }
        return text
    }
}
