import Foundation
import Testing
@testable import PostgateCore

/// `--destination` parsing: URIs in any scheme case, the user name and password up to the last
/// `@`, percent-decoding, key=value strings, and messages that never show a password.
@Suite struct DestinationParseTests {
    func postgres(_ text: String) throws -> PostgresConnInfo {
        guard case .postgres(let info) = try DestinationURL.parse(text) else { throw SyncError.plan("not postgres") }
        return info
    }

    func error(_ text: String) -> String {
        do { _ = try DestinationURL.parse(text); return "" } catch { return error.description }
    }

    @Test func uriPartsWithRawAndEncodedPasswords() throws {
        for scheme in ["postgres", "postgresql", "Postgres", "POSTGRES", "PostgreSQL"] {
            let i = try postgres("\(scheme)://al%20ice:p@ss:w/o?r#d@db.example:6432/my%2Fdb?sslmode=verify-full&application_name=a%40b")
            #expect(i.parameters == [.init("user", "al ice"), .init("password", "p@ss:w/o?r#d"), .init("host", "db.example"), .init("port", "6432"),
                                     .init("dbname", "my/db"), .init("sslmode", "verify-full"), .init("application_name", "a@b")], "\(scheme)")
        }
        #expect(try postgres("postgres://u:%25%40%3A%2F%3F%23%20%27%22%5C@h/d").value("password") == "%@:/?# '\"\\")
        #expect(try postgres("postgres:postgresql://u@h").parameters == [.init("user", "u"), .init("host", "h")])
        #expect(try postgres("postgres://[::1]:5433,other:5434/d").parameters == [.init("host", "::1,other"), .init("port", "5433,5434"), .init("dbname", "d")])
        #expect(try postgres("postgres:///d?host=%2Fvar%2Frun%2Fpostgresql").parameters == [.init("dbname", "d"), .init("host", "/var/run/postgresql")])
        #expect(try postgres("postgres://h?ssl=true").value("sslmode") == "require")
        #expect(try postgres("postgres:mydb").parameters == [.init("dbname", "mydb")])
    }

    @Test func keywordValueStrings() throws {
        let i = try postgres("Postgres:host=h port=5 dbname=x user=u password='a b\\'c\\\\d@e'")
        #expect(i.value("password") == "a b'c\\d@e" && i.value("host") == "h" && i.value("port") == "5")
        // A dbname that looks like a URI is a name, never expanded.
        #expect(try postgres("postgres:dbname=postgres://u:pw@h/d").libpqParameters.map(\.0) == ["dbname"])
    }

    @Test func descriptionsMaskSecretsAndComeFromParsedParts() throws {
        #expect(DestinationURL.describe("postgres://u:se/cr@et@h/db") == "postgres:user=u password=*** host=h dbname=db")
        #expect(DestinationURL.describe("POSTGRES://u:secret@h") == "postgres:user=u password=*** host=h")
        #expect(DestinationURL.describe("postgres:host=h password='a b' dbname=x") == "postgres:password=*** dbname=x host=h")
        #expect(DestinationURL.describe("postgres://h/d?sslpassword=zzz&application_name=a%20b") == "postgres:host=h dbname=d sslpassword=*** application_name='a b'")
        #expect(DestinationURL.describe("postgres:host=h password='unbalanced") == "(a --destination that does not parse)")
        let i = try postgres("postgres://u:topsecret@h")
        #expect(!"\(i)".contains("topsecret") && !String(reflecting: i).contains("topsecret") && !"\(DestinationURL.Kind.postgres(i))".contains("topsecret"))
        var dumped = ""
        dump(i, to: &dumped)
        #expect(!dumped.contains("topsecret"))
    }

    @Test func errorsNameThePartAndNeverItsText() throws {
        let cases: [(String, String)] = [
            ("postgres://u:SECRETpw@h:99999/d", "the port"),
            ("postgres://u:SECRETpw@h:5x/d", "the port"),
            ("postgres://u:SECRET%zzpw@h/d", "the password"),
            ("postgres://u:SECRET%00pw@h/d", "the password"),
            ("postgres://u:SECRET%C3pw@h/d", "the password"),
            ("postgres://SECRET%zz@h/d", "the user name"),
            ("postgres://u:SECRETpw@h/d%zz", "the database name"),
            ("postgres://u:SECRETpw@h/d#SECRETfrag", "fragment"),
            ("postgres://u:SECRETpw@[::1/d", "IPv6"),
            ("postgres://u:SECRETpw@h/d?nosuchkeyword=SECRET", "`nosuchkeyword`"),
            ("postgres://u:SECRETpw@h/d?SECRET", "no `=`"),
            ("postgres://u:SECRETpw@h/d?password=SECRET%zz", "query parameter `password`"),
            ("postgres:host=h password='SECRET pw", "could not be parsed"),
            ("postgres:host=h password=SECRET pw", "could not be parsed"),
            ("postgres:SECRET:pw@h", "neither"),
            ("host=h password=SECRET:pw", "does not start with a scheme"),
            ("SECRETpw", "has no scheme"),
        ]
        for (text, part) in cases {
            let m = error(text)
            #expect(m.contains(part) && m.contains("--destination"), "\(text): \(m)")
            #expect(!m.contains("SECRET") && !m.contains("pw"), "\(text): \(m)")
        }
    }
}
