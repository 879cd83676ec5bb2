import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Where the PostgreSQL store is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, with the
/// query items `sslmode=disable|prefer|require` (prefer: TLS when the server offers it) and
/// `schema=NAME` (the tables' schema; default the role's search path). `host=/run/postgresql`
/// in the query reaches the server by its Unix socket instead.
public struct PostgresURL: Sendable {
    public var configuration: PostgresClient.Configuration
    /// The same, for one connection (`probe`).
    var connection: PostgresConnection.Configuration
    public var schema: String?
    /// The URL without its password, for logs.
    public let redacted: String

    public init(_ text: String) throws {
        guard let u = URLComponents(string: text), let scheme = u.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw ServerError("the PostgreSQL URL must look like postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        let user = u.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? "postgres"
        let password = u.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        let database = String(u.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw ServerError("the PostgreSQL URL names no database (postgres://…/DATABASE)") }
        var items: [String: String] = [:]
        for item in u.queryItems ?? [] {
            guard ["sslmode", "schema", "host", "application_name"].contains(item.name), let value = item.value, items[item.name] == nil else {
                throw ServerError("the PostgreSQL URL's '\(item.name)' is not understood (sslmode, schema, host or application_name, once each)")
            }
            items[item.name] = value
        }
        if let socket = items["host"] {
            guard socket.hasPrefix("/") else { throw ServerError("the PostgreSQL URL's host= must be a socket folder (/run/postgresql)") }
            let port = u.port ?? 5432
            configuration = .init(unixSocketPath: socket + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
            connection = .init(unixSocketPath: socket + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            guard let host = u.host, !host.isEmpty else { throw ServerError("the PostgreSQL URL names no host") }
            guard (1...65_535).contains(u.port ?? 5432) else { throw ServerError("the PostgreSQL URL's port must be between 1 and 65535") }
            let tls: PostgresClient.Configuration.TLS
            let single: PostgresConnection.Configuration.TLS
            switch items["sslmode"] ?? "prefer" {
            case "disable": (tls, single) = (.disable, .disable)
            case "prefer": (tls, single) = (.prefer(.makeClientConfiguration()), .prefer(try NIOSSLContext(configuration: .makeClientConfiguration())))
            case "require": (tls, single) = (.require(.makeClientConfiguration()), .require(try NIOSSLContext(configuration: .makeClientConfiguration())))
            default: throw ServerError("the PostgreSQL URL's sslmode must be disable, prefer or require")
            }
            configuration = .init(host: host, port: u.port ?? 5432, username: user, password: password, database: database, tls: tls)
            connection = .init(host: host, port: u.port ?? 5432, username: user, password: password, database: database, tls: single)
        }
        if let schema = items["schema"] {
            guard Self.isIdentifier(schema) else { throw ServerError("the PostgreSQL URL's schema must be letters, digits and _ (not starting with a digit)") }
            self.schema = schema
            configuration.options.additionalStartupParameters.append(("search_path", schema))
            connection.options.additionalStartupParameters.append(("search_path", schema))
        }
        configuration.options.additionalStartupParameters.append(("application_name", items["application_name"] ?? "fieldsync-server"))
        // A transaction left open by a process that hangs holds a device's chain lock: the database
        // ends it rather than keep that laptop out for good. (A process that dies closes its
        // connections, which ends its transactions at once.) Generous: the merge runs between
        // queries, and a loaded machine's merge of a large upload takes a while.
        configuration.options.additionalStartupParameters.append(("idle_in_transaction_session_timeout", "300000"))
        var shown = u
        // Plain ASCII in the password's place: "…" would be shown percent-encoded.
        if shown.password != nil { shown.percentEncodedPassword = "***" }
        redacted = shown.string ?? "postgres://…"
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, s.count <= 63 else { return false }
        let letters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyz_")
        return letters.contains(first) && s.unicodeScalars.allSatisfy { letters.contains($0) || ("0"..."9").contains($0) }
    }

    /// The URL from `--postgres`, else from `FIELDSYNC_POSTGRES_URL`, else nil (the SQLite store).
    public static func fromOption(_ option: String?) throws -> PostgresURL? {
        if let option { return try PostgresURL(option) }
        if let env = ProcessInfo.processInfo.environment["FIELDSYNC_POSTGRES_URL"], !env.isEmpty { return try PostgresURL(env) }
        return nil
    }
}

extension PostgresSyncStore {
    /// Connects once, so that a database that is down, or refuses the user, is said at once in
    /// one line (the pool would retry for a minute and then say only that it gave up).
    static func probe(_ url: PostgresURL, logger: Logger) async throws {
        var single = url.connection
        single.options.connectTimeout = .seconds(10)
        var quiet = logger
        quiet.logLevel = .critical
        do {
            let connection = try await PostgresConnection.connect(configuration: single, id: 0, logger: quiet)
            try await connection.close()
        } catch let e as PSQLError {
            throw ServerError("cannot use PostgreSQL at \(url.redacted): \(describe(e))")
        } catch {
            throw ServerError("cannot reach PostgreSQL at \(url.redacted): \(error)")
        }
    }

    /// Runs `body` with a store on `url`, its client running and its schema migrated; the
    /// client stops when `body` returns or throws.
    public static func with<T: Sendable>(_ url: PostgresURL, maxConnections: Int = 16, logger: Logger,
                                         _ body: @Sendable (PostgresSyncStore) async throws -> T) async throws -> T {
        var configuration = url.configuration
        configuration.options.maximumConnections = maxConnections
        try await probe(url, logger: logger)
        // The pool's own messages (a lease before `run()` has started, reconnecting) are not the
        // operator's business unless they are errors; a query that fails says why itself.
        var background = logger
        background.logLevel = .error
        let client = PostgresClient(configuration: configuration, backgroundLogger: background)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await client.run(); return nil }
            let store = PostgresSyncStore(client: client, logger: logger)
            do {
                try await store.migrate()
                let value = try await body(store)
                group.cancelAll()
                return value
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }
}
