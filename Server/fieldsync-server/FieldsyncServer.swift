import ArgumentParser
import FieldSyncCore
import FieldSyncServer
import FieldSyncStore
import Foundation
import Logging
import PostgresNIO

@main
struct FieldsyncServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync-server",
        abstract: "The fieldsync sync server and its administration.",
        subcommands: [Init.self, Serve.self, Invite.self, Devices.self, BundleCommand.self, Cert.self, Backup.self, Restore.self, Migrate.self]
    )

    /// One line on stderr for every failure; usage mistakes exit 2.
    static func main() async {
        // Whatever this process makes (the database's -wal and -shm files too) is its owner's alone.
        umask(0o077)
        do {
            var command = try parseAsRoot()
            if var async = command as? any AsyncParsableCommand { try await async.run() } else { try command.run() }
        } catch let e as ServerError {
            fail(e.message, 1)
        } catch let e as StoreError {
            fail(e.message, 1)
        } catch let e as CoreError {
            fail(e.message, 1)
        } catch let e as SyncStoreError {
            fail(e.message, 1)
        } catch let e as ExitCode {
            Foundation.exit(e.rawValue)  // the command said what it did; the code says the rest
        } catch let e as PSQLError {
            fail("PostgreSQL: \(PostgresSyncStore.describe(e))", 1)
        } catch {
            if exitCode(for: error) == .success { print(fullMessage(for: error)); Foundation.exit(0) }
            if error is ValidationError || error is CleanExit || String(describing: type(of: error)).contains("Parser") || exitCode(for: error).rawValue == 64 {
                fail(message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)", 2)
            }
            fail("\(error)", 1)
        }
    }

    static func fail(_ message: String, _ code: Int32) -> Never {
        FileHandle.standardError.write(Data("fieldsync-server: \(message)\n".utf8))
        Foundation.exit(code)
    }
}

struct DataOption: ParsableArguments {
    @Option(help: "The server's data folder.") var data: String
}

/// Where the server's data is: the folder (keys, certificates, and the SQLite database), and
/// PostgreSQL when the data is there.
struct StoreOptions: ParsableArguments {
    @Option(help: "The server's data folder (keys and certificates; the database too without --postgres).") var data: String
    @Option(help: "PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=require&schema=NAME] (default: $FIELDSYNC_POSTGRES_URL; without either, the SQLite database in --data).")
    var postgres: String?

    func url() throws -> PostgresURL? { try PostgresURL.fromOption(postgres) }

    /// Runs `body` with the store, logging to standard error at warning level.
    func withStore<T: Sendable>(maxConnections: Int = 4, logger: Logger = .commandLine,
                                _ body: @escaping @Sendable (any SyncStoreAdmin) async throws -> T) async throws -> T {
        try await ServerData(directory: data).withStore(postgres: try url(), logger: logger, maxConnections: maxConnections, body)
    }
}

extension Logger {
    /// For the administration commands: warnings and errors only, on standard error.
    static var commandLine: Logger {
        var l = Logger(label: "fieldsync-server") { label -> any LogHandler in StreamLogHandler.standardError(label: label) }
        l.logLevel = Logger.Level.warning
        return l
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the server key, a private CA, a TLS certificate and the database; print the CA pin.")
    @OptionGroup var data: StoreOptions
    @Option(name: .customLong("hostname"), help: "A host name or address clients will use (repeatable).") var hostnames: [String] = []
    @Option(name: .customLong("ca-key-out"), help: "Keep the CA's private key in this new file (0600; keep it offline). Without it the key is dropped once the TLS certificate is issued.")
    var caKeyOut: String?

    func run() async throws {
        let files = ServerData(directory: data.data)
        let result: ServerData.InitResult
        if let url = try data.url() {
            result = try await files.initialise(hostnames: hostnames, caKeyOut: caKeyOut, postgres: url, logger: .commandLine)
            print("server initialised: keys and certificates in \(data.data), data in \(url.redacted)")
        } else {
            result = try files.initialise(hostnames: hostnames, caKeyOut: caKeyOut)
            print("server initialised in \(data.data)")
        }
        print(caKeyOut.map { "CA key written to \($0): keep it offline" } ?? "CA key not kept (a new certificate needs a new init; see --ca-key-out)")
        print("CA pin: \(result.caPin)")
        print("enrol a laptop:  fieldsync-server invite --data \(data.data) --role field --name NAME")
        print("                 fieldsync enroll https://HOST:PORT --token TOKEN --pin \(result.caPin)")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve HTTPS (TLS 1.2+) until SIGTERM or SIGINT; in-flight syncs finish first.")
    @OptionGroup var data: StoreOptions
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one and prints it).") var port = 8443
    @Option(name: .customLong("postgres-connections"), help: "Connections to PostgreSQL this process keeps at most.") var postgresConnections = 16
    @Option(help: "Server processes on this PostgreSQL database (each its own port, or behind one balancer): each process shares the load limits by it.")
    var processes = 1
    @Option(name: .customLong("rate-limit"), help: "Requests per device per minute.") var rateLimit = 600
    @Option(name: .customLong("max-connections"), help: "Open connections at once; more wait to be accepted.") var maxConnections = ConnectionLimits().maxConnections
    @Option(name: .customLong("max-connections-per-address"), help: "Open connections at once from one IP address; more are closed at once.")
    var maxConnectionsPerAddress = ConnectionLimits().maxConnectionsPerAddress
    @Option(name: .customLong("log-format"), help: "text (a line per request on standard error) or json (an object per line).") var logFormat = "text"
    @Option(name: .customLong("log-level"), help: "error, warning, info (a line per request) or debug.") var logLevel = "info"

    func run() async throws {
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
        guard let level = Logger.Level(rawValue: logLevel), [.error, .warning, .info, .debug].contains(level) else {
            throw ValidationError("--log-level must be error, warning, info or debug")
        }
        guard (1...64).contains(processes) else { throw ValidationError("--processes must be between 1 and 64") }
        if processes > 1, try data.url() == nil { throw ValidationError("--processes counts servers sharing one PostgreSQL database: give --postgres URL too") }
        guard (1...1_000).contains(postgresConnections) else { throw ValidationError("--postgres-connections must be between 1 and 1000") }
        guard (1...65_536).contains(maxConnections) else { throw ValidationError("--max-connections must be between 1 and 65536") }
        guard (1...65_536).contains(maxConnectionsPerAddress) else { throw ValidationError("--max-connections-per-address must be between 1 and 65536") }
        let files = ServerData(directory: data.data)
        try files.checkSecretModes()
        // Held while serving SQLite, so `restore` refuses to replace the database under this
        // process. (On PostgreSQL the folder may be read-only, and restore is pg_restore's.)
        let serving = try data.url() == nil ? files.holdServeLock() : nil
        defer { serving?.release() }
        let key = try files.serverKey(), caPEM = try files.caPEM(), (chain, tlsKey) = try files.tlsMaterial()
        let limits = {
            var l = ConnectionLimits()
            l.maxConnections = maxConnections
            l.maxConnectionsPerAddress = maxConnectionsPerAddress
            return l
        }()
        let json = logFormat == "json"
        let logger = {
            var l = Logger(label: "fieldsync-server") { label -> any LogHandler in
                json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            }
            l.logLevel = level
            return l
        }()
        let (host, port, rateLimit, dataPath) = (self.host, self.port, self.rateLimit, data.data)
        try await files.withStore(postgres: try data.url(), logger: logger, maxConnections: postgresConnections) { store in
            let server = SyncServer(store: store, key: key, caPEM: caPEM, requestsPerMinute: rateLimit, processes: processes)
            let backend = (await store.health()).backend
            let app = try server.application(chainPEM: chain, keyPEM: tlsKey, host: host, port: port, logger: logger, limits: limits) { bound in
                logger.info("listening", metadata: ["address": .string("https://\(host):\(bound)"), "data": .string(dataPath),
                                                    "store": .string(backend)])
                FileHandle.standardOutput.write(Data("listening on https://\(host):\(bound)\n".utf8))
            }
            do { try await app.runService() } catch {
                logger.error("stopped on an error", metadata: ["error": .string("\(error)")])
                throw error
            }
            logger.info("stopped")
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a server's data from its SQLite file to PostgreSQL (stop its serve first).",
        discussion: "Every change is checked and merged again on the way in. The SQLite file is left as it was; the folder then serves only with --postgres.")
    @Option(help: "The server's data folder (with server.sqlite).") var from: String
    @Option(help: "PostgreSQL URL of an empty database (default: $FIELDSYNC_POSTGRES_URL).") var postgres: String?

    func run() async throws {
        guard let url = try PostgresURL.fromOption(postgres) else { throw ValidationError("give --postgres URL (or set FIELDSYNC_POSTGRES_URL)") }
        let files = ServerData(directory: from)
        guard FileManager.default.fileExists(atPath: files.databasePath) else {
            throw ServerError("no server in \(from): give the data folder of a server that runs on SQLite")
        }
        // Not while it serves: what laptops sent meanwhile would stay behind in the SQLite file.
        let lock = try files.lockAgainstServe()
        defer { lock.release() }
        let start = ContinuousClock.now
        let report = try await StoreMigration.run(from: files, to: url, logger: .commandLine) { line in
            FileHandle.standardError.write(Data("  \(line)\n".utf8))
        }
        print("moved \(report.devices) devices, \(report.changes) changes (\(report.held) held for a gap), \(report.records) records to \(url.redacted) in \(start.duration(to: .now))")
        if report.openInvites > 0 { print("\(report.openInvites) unused invites were not moved: make them again with invite") }
        print("serve with: fieldsync-server serve --data \(from) --postgres URL")
    }
}

struct BundleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle", abstract: "Changes carried by hand when a laptop has no network (docs/BUNDLE.md).",
        subcommands: [Apply.self, Create.self])

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take in a laptop's bundle: each change checked and stored as if its author had synced it.",
            discussion: "Exit 5 when some changes were refused (named). The laptops' outboxes empty at their next sync, or with a bundle from `bundle create`.")
        @OptionGroup var data: StoreOptions
        @Argument(help: "The bundle file.") var file: String

        func run() async throws {
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? nil
            guard let size, size <= ChangeBundle.maxBytes, let bytes = FileManager.default.contents(atPath: file) else {
                throw ServerError("cannot read \(file) (or it is larger than \(ChangeBundle.maxBytes) bytes)")
            }
            let key = try ServerData(directory: data.data).serverKey()
            let r = try await data.withStore { store in try await ServerBundle.apply(Array(bytes), store: store, key: key) }
            print("took \(r.accepted) changes from \(r.madeBy)'s bundle; \(r.refused.count) refused")
            for x in r.refused { print("refused \(x.id.prefix(12)) (\(x.code)): \(x.reason)") }
            if !r.refused.isEmpty { throw ExitCode(5) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write everything the server holds, with its roster and a receipt for the device's own changes, for one device to apply.")
        @OptionGroup var data: StoreOptions
        @Option(name: .customLong("for"), help: "The device (id, unique prefix, or name) that will apply it.") var device: String
        @Option(help: "The bundle file to write (never over an existing file; mode 0600).") var out: String

        func run() async throws {
            let key = try ServerData(directory: data.data).serverKey()
            let (wanted, out) = (device, self.out)
            let (bytes, count, name) = try await data.withStore { store in
                let matches = try await store.roster().sorted.filter { $0.name == wanted || $0.device.description.hasPrefix(wanted.lowercased()) }
                guard matches.count == 1 else {
                    throw ServerError(matches.isEmpty ? "no device '\(DeviceName.printable(wanted))'" : "'\(DeviceName.printable(wanted))' matches \(matches.count) devices: give more of the id")
                }
                let (bytes, count) = try await ServerBundle.create(for: matches[0].device, store: store, key: key)
                return (bytes, count, matches[0].name)
            }
            let fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw ServerError("cannot create \(out): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 { if errno == EINTR { continue }; unlink(out); throw ServerError("cannot write \(out)") }
                done += n
            }
            guard fsync(fd) == 0 else { unlink(out); throw ServerError("cannot write \(out)") }
            print("wrote \(count) changes for \(DeviceName.printable(name)) to \(out)")
        }
    }
}

struct Cert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The server's TLS certificate: show it, or renew it from the private CA.",
                                                    subcommands: [Show.self, Renew.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The certificate's host names, its expiry, and the CA pin laptops enrol with.")
        @OptionGroup var data: DataOption
        func run() throws {
            let files = ServerData(directory: data.data)
            let (names, notAfter) = try files.tlsCertificate()
            print("host names: \(names.isEmpty ? "localhost only" : names.joined(separator: ", "))")
            print("expires:    \(Timestamps.iso(UInt64(max(0, notAfter.timeIntervalSince1970) * 1000)))")
            print("CA pin:     \(try ServerData.pin(caPEM: try files.caPEM()))")
        }
    }

    struct Renew: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new TLS certificate (a new key, 825 days) from the private CA, for new host names or before it expires.",
            discussion: "Needs the CA key `init --ca-key-out` wrote. Laptops pin the CA, so they need nothing new; restart serve to use it.")
        @OptionGroup var data: DataOption
        @Option(name: .customLong("ca-key"), help: "The CA key file (`fieldsync-server init --ca-key-out`).") var caKey: String
        @Option(name: .customLong("hostname"), help: "A host name or address laptops reach the server by (repeatable; default: the current certificate's).")
        var hostnames: [String] = []

        func run() throws {
            guard let d = FileManager.default.contents(atPath: caKey), let pem = String(data: d, encoding: .utf8) else {
                throw ServerError("cannot read the CA key \(caKey)")
            }
            let (names, notAfter) = try ServerData(directory: data.data).renewTLS(caKeyPEM: pem, hostnames: hostnames)
            print("renewed the TLS certificate for \(names.joined(separator: ", ")) until \(Timestamps.iso(UInt64(max(0, notAfter.timeIntervalSince1970) * 1000))); restart serve to use it")
        }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a consistent copy of the server (database, keys and certificates) to one file, while it serves.",
        discussion: "The file is as secret as the server key (mode 0600); keep it where the server's disk is not. A server on PostgreSQL is backed up with pg_dump (docs/DEPLOY.md).")
    @OptionGroup var data: DataOption
    @Option(help: "The backup file to write (never over an existing file).") var out: String

    func run() throws {
        let report = try ServerBackup.create(ServerData(directory: data.data), to: out)
        print("backed up \(report.devices) devices and \(report.changes) changes to \(out) (\(report.madeAt))")
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a backup in place as the server's data (stop its serve first).",
        discussion: """
            Into a new folder: the whole server. Into the same server's folder: its database is replaced, the old one kept beside it.             What the server took after the backup comes back from the laptops at their next sync; devices enrolled after it must enrol             again, and revocations made after it must be made again.
            """)
    @OptionGroup var data: DataOption
    @Argument(help: "The backup file, from `fieldsync-server backup`.") var file: String

    func run() throws {
        let report = try ServerBackup.restore(ServerData(directory: data.data), from: file)
        print("restored \(report.devices) devices and \(report.changes) changes from the backup of \(report.madeAt) into \(data.data)")
        print("laptops send again what the server took after \(report.madeAt) at their next sync")
        if let previous = report.previous, !report.previousUnreadable {
            print("the database it replaced is kept as \(previous); \(report.rosterCarried) enrolments and revocations made since the backup were taken from it, with the invites used since")
        } else {
            if let previous = report.previous { print("the database it replaced could not be read; its files are kept as \(previous)") }
            print("revoke again any device revoked since then, and invite again any enrolled since then (fieldsync-server devices list)")
        }
    }
}

struct Invite: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One-time enrolment tokens: make one (`invite --role R --name N`), list them, or withdraw one.",
        subcommands: [CreateInvite.self, ListInvites.self, CancelInvite.self], defaultSubcommand: CreateInvite.self)
}

struct CreateInvite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Make a one-time enrolment token bound to a role and a name (the default).")
    @OptionGroup var data: StoreOptions
    @Option(help: "field, press or coordinator.") var role: String
    @Option(help: "The device's name: the name it will have in the roster, whatever it asks for.") var name: String
    @Option(help: "Hours until the token expires.") var hours = 72

    func run() async throws {
        guard let r = Role(rawValue: role) else { throw ValidationError("--role must be field, press or coordinator") }
        if let problem = DeviceName.problem(name) { throw ValidationError("--name \(problem)") }
        guard (1...24 * 30).contains(hours) else { throw ValidationError("--hours must be between 1 and 720") }
        let files = ServerData(directory: data.data)
        let now = Timestamps.nowMillis
        let (name, hours) = (self.name, self.hours)
        let token = try await data.withStore { store in
            try await store.createInvite(role: r, name: name, ttlMillis: UInt64(hours) * 3_600_000, now: now)
        }
        // The token alone on standard output (scripts read it); for the person, on standard
        // error: when it expires and the line to run on the laptop.
        print(token)
        let pin = (try? ServerData.pin(caPEM: try files.caPEM())) ?? "sha256:…"
        FileHandle.standardError.write(Data("""
            invite for \(DeviceName.printable(name)) (\(r.rawValue)), one use, expires \(Timestamps.iso(now + UInt64(hours) * 3_600_000))
            on the laptop:  fieldsync enroll https://HOST:PORT --token \(token) --pin \(pin)

            """.utf8))
    }
}

struct ListInvites: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The invites not yet used and not expired (--all: every invite made).")
    @OptionGroup var data: StoreOptions
    @Flag(help: "Used and expired invites too.") var all = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let now = Timestamps.nowMillis
        let invites = try await data.withStore { store in try await store.invites() }.filter { all || ($0.usedAt == nil && $0.expiresAt > now) }
        if json {
            print(JSONValue.array(invites.map { i in
                .object(["id": .string(i.id), "name": .string(i.name), "role": .string(i.role.rawValue), "created_at": .string(Timestamps.iso(i.createdAt)),
                         "expires_at": .string(Timestamps.iso(i.expiresAt)), "state": .string(i.usedAt == nil ? (i.expiresAt > now ? "open" : "expired") : "used"),
                         "used_by": i.usedBy.map(JSONValue.string) ?? .null])
            }).canonicalString)
            return
        }
        guard !invites.isEmpty else { print(all ? "(none)" : "(none open)"); return }
        var rows = [["ID", "NAME", "ROLE", "EXPIRES", "STATE"]]
        for i in invites { rows.append([i.id, DeviceName.printable(i.name), i.role.rawValue, Timestamps.iso(i.expiresAt), i.state(now: now)]) }
        let widths = (0..<5).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { c, v in c == 4 ? v : v.padding(toLength: widths[c], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}

struct CancelInvite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Withdraw an invite not yet used: its token no longer enrols anything.")
    @Argument(help: "The invite's ID (or its first digits, as `invite list` shows it) or the name it was made for.") var id: String
    @OptionGroup var data: StoreOptions

    func run() async throws {
        let id = self.id, now = Timestamps.nowMillis
        let gone = try await data.withStore { store in
            let open = try await store.invites().filter { $0.usedAt == nil }
            let key = id.lowercased()
            let matches = open.filter { $0.name == id || (key.count >= 4 && $0.hash.hex.hasPrefix(key)) }
            guard matches.count == 1 else {
                let listed = matches.prefix(5).map { "\($0.id) for \(DeviceName.printable($0.name))" }.joined(separator: "; ")
                throw ServerError(matches.isEmpty ? "no unused invite '\(DeviceName.printable(id))' (fieldsync-server invite list --all)"
                                                  : "'\(DeviceName.printable(id))' matches \(matches.count) invites: \(listed); give its ID")
            }
            guard try await store.cancelInvite(hash: matches[0].hash) else {
                throw ServerError("the invite \(matches[0].id) was used meanwhile: revoke the device instead")
            }
            return matches[0]
        }
        print("cancelled invite \(gone.id) for \(DeviceName.printable(gone.name)) (\(gone.role.rawValue)), \(gone.expiresAt > now ? "open" : "expired") until \(Timestamps.iso(gone.expiresAt))")
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Enrolled devices.", subcommands: [List.self, Revoke.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each device's role, last sync and pending backlog.")
        @OptionGroup var data: StoreOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let (reports, forkList) = try await data.withStore { store in (try await store.deviceReports(), try await store.forks(limit: .max)) }
            let forks = Dictionary(grouping: forkList, by: \.device).mapValues { $0.sorted { $0.seq < $1.seq } }
            if json {
                print(JSONValue.array(reports.map { r in
                    .object(["device": .string(r.entry.device.description), "name": .string(r.entry.name), "role": .string(r.entry.role.rawValue),
                             "last_sync": r.lastSync.map { .string(Timestamps.iso($0)) } ?? .null, "changes": .int(Int64(r.changes)),
                             "backlog": .int(Int64(r.backlog)), "revoked": .bool(r.entry.revokedAfterSeq != nil),
                             "forks": .array((forks[r.entry.device] ?? []).map { f in
                                 .object(["seq": .int(Int64(clamping: f.seq)), "refused": .string(f.refused.hex), "seen": .string(Timestamps.iso(f.seenAt))])
                             })])
                }).canonicalString)
                return
            }
            guard !reports.isEmpty else { print("(none)"); return }
            var rows = [["DEVICE", "NAME", "ROLE", "LAST SYNC", "BACKLOG", "STATE"]]
            for r in reports {
                rows.append([r.entry.device.description, DeviceName.printable(r.entry.name), r.entry.role.rawValue,
                             r.lastSync.map(Timestamps.iso) ?? "never", String(r.backlog),
                             [r.entry.revokedAfterSeq.map { "REVOKED after seq \($0)" } ?? "active",
                              forks[r.entry.device].map { "FORKED at seq \($0.map { String($0.seq) }.joined(separator: ", ")) (its key signed two versions there: a copied replica; the stored one is kept)" }]
                                 .compactMap { $0 }.joined(separator: "; ")])
            }
            let widths = (0..<6).map { c in rows.map { $0[c].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { c, v in c == 5 ? v : v.padding(toLength: widths[c], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cut a device off: nothing after its last accepted change is taken.")
        @Argument(help: "Device id (or unique prefix) or name.") var id: String
        @OptionGroup var data: StoreOptions
        @Flag(help: "Do not ask first (on a terminal it asks; a script is never asked).") var yes = false

        func run() async throws {
            let id = self.id
            // A person at a terminal confirms; a script (stdin not a terminal) is never asked.
            let ask = !yes && isatty(STDIN_FILENO) == 1
            let e = try await data.withStore { store in
                let matches = try await store.roster().sorted.filter { $0.name == id || $0.device.description.hasPrefix(id.lowercased()) }
                guard matches.count == 1 else {
                    let listed = matches.prefix(5).map { "\(DeviceName.printable($0.name)) (\($0.device))" }.joined(separator: "; ")
                    throw ServerError(matches.isEmpty ? "no device '\(DeviceName.printable(id))'"
                                                      : "'\(DeviceName.printable(id))' matches \(matches.count) devices: \(listed); give more of the id")
                }
                if ask {
                    let m = matches[0]
                    FileHandle.standardError.write(Data("revoke \(DeviceName.printable(m.name)) (\(m.role.rawValue), \(m.device))? Every request it signs, and every change it signs from now on, will be refused. [y/N] ".utf8))
                    let answer = (readLine() ?? "").trimmingCharacters(in: .whitespaces).lowercased()
                    guard answer == "y" || answer == "yes" else { throw ServerError("not revoked") }
                }
                return try await store.revoke(matches[0].device)
            }
            print("revoked \(DeviceName.printable(e.name)) (\(e.device)) after seq \(e.revokedAfterSeq ?? 0)")
        }
    }
}
