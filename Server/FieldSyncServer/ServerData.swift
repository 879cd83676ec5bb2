import Crypto
import FieldSyncCore
import FieldSyncStore
import Foundation
import Logging
import Glibc
import SwiftASN1
import X509

/// The server's data folder: its Ed25519 key, the private CA's certificate, the TLS certificate
/// for its host names, and its SQLite replica. Made once by `init`; never overwritten. The folder
/// is 0700, its keys and database files 0600 (`serve` refuses keys others can read). The CA's
/// private key is not kept here: only `init` needs it, and it writes it only where the
/// administrator asks (`--ca-key-out`), else nowhere.
public struct ServerData: Sendable {
    public let directory: String
    public var serverKeyPath: String { directory + "/server.key" }
    public var caCertPath: String { directory + "/ca.pem" }
    public var tlsCertPath: String { directory + "/tls.pem" }
    public var tlsKeyPath: String { directory + "/tls.key" }
    public var databasePath: String { directory + "/server.sqlite" }
    /// Present when the server's data is in PostgreSQL (it says so; the URL is never written).
    public var postgresMarkerPath: String { directory + "/postgresql" }

    public init(directory: String) { self.directory = directory }

    /// Certificates are valid from a year back: a laptop whose clock is days (or months) behind
    /// must still complete the TLS handshake.
    static let clockSlack: TimeInterval = 365 * 86400

    /// What `init` prints: the pin clients give to `fieldsync enroll --pin`.
    public struct InitResult: Sendable {
        public let caPin: String
        public let serverPublicKey: [UInt8]
    }

    /// Makes the folder and its files. The CA key is written to `caKeyOut` (0600, never over an
    /// existing file) when given, else it is dropped once the TLS certificate is issued.
    /// `sqlite: false` makes no database here (the server's data goes to PostgreSQL).
    public func initialise(hostnames: [String], caKeyOut: String? = nil, now: Date = Date(), sqlite: Bool = true) throws -> InitResult {
        let fm = FileManager.default
        for path in [serverKeyPath, caCertPath, databasePath, postgresMarkerPath] where fm.fileExists(atPath: path) {
            throw ServerError("\(directory) already holds a server (\((path as NSString).lastPathComponent)); refusing to overwrite it")
        }
        if let caKeyOut, fm.fileExists(atPath: caKeyOut) { throw ServerError("\(caKeyOut) already exists; refusing to overwrite it") }
        do { try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
            throw ServerError("cannot create \(directory): \((error as NSError).localizedDescription)")
        }
        // An existing folder keeps whatever mode it had: tighten it.
        guard chmod(directory, 0o700) == 0 else { throw ServerError("cannot make \(directory) private (mode 0700): \(Self.errno())") }
        let names = hostnames.isEmpty ? ["localhost"] : hostnames
        let serverKey = DeviceKey()
        let caKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let caName = try DistinguishedName { CommonName("fieldsync private CA") }
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: caKey.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.clockSlack), notValidAfter: now.addingTimeInterval(86400 * 3650),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: caKey)
        let (leaf, leafKey) = try Self.issueTLS(names: names, ca: ca, caKey: caKey, now: now)
        // The CA key first: if it cannot be written where asked, nothing is left in the folder
        // and `init` can simply be run again.
        if let caKeyOut { try write(caKeyOut, Array(try caKey.serializeAsPEM().pemString.utf8), secret: true) }
        try write(serverKeyPath, Array(serverKey.rawRepresentation.hex.utf8), secret: true)
        try write(tlsKeyPath, Array(try leafKey.serializeAsPEM().pemString.utf8), secret: true)
        try write(caCertPath, Array(try ca.serializeAsPEM().pemString.utf8), secret: false)
        try write(tlsCertPath, Array((try leaf.serializeAsPEM().pemString + "\n" + ca.serializeAsPEM().pemString).utf8), secret: false)
        if sqlite {
            let store = try ReplicaStore.open(path: databasePath, create: true, server: true)
            try store.setMeta("server_public_key", serverKey.publicKey.hex)
            try tightenDatabase()
        } else {
            try write(postgresMarkerPath, Array("this server's data is in PostgreSQL: give fieldsync-server --postgres URL\n".utf8), secret: false)
        }
        return InitResult(caPin: try Self.pin(caPEM: try ca.serializeAsPEM().pemString), serverPublicKey: serverKey.publicKey)
    }

    /// A TLS certificate for `names` (and loopback) from the private CA, valid 825 days (the
    /// most browsers and TLS stacks accept) and from a year back (a laptop's clock may lag).
    static func issueTLS(names: [String], ca: Certificate, caKey: Certificate.PrivateKey, now: Date) throws -> (Certificate, Certificate.PrivateKey) {
        let leafKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        var sans: [GeneralName] = []
        for n in names + ["localhost", "127.0.0.1", "::1"] where !sans.contains(where: { Self.matches($0, n) }) {
            if let ip = Self.ipBytes(n) { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip)))) } else { sans.append(.dnsName(n)) }
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: leafKey.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.clockSlack), notValidAfter: now.addingTimeInterval(86400 * 825),
            issuer: ca.subject, subject: try DistinguishedName { CommonName(names.first ?? "localhost") }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: caKey)
        return (leaf, leafKey)
    }

    /// The TLS certificate's host names (DNS names and addresses) and expiry.
    public func tlsCertificate() throws -> (names: [String], notAfter: Date) {
        // tls.pem is the chain: the server's certificate first, then the CA's.
        guard let first = try? PEMDocument.parseMultiple(pemString: try read(tlsCertPath)).first,
              let leaf = try? Certificate(derEncoded: first.derBytes) else {
            throw ServerError("\(tlsCertPath) holds no certificate")
        }
        var names: [String] = []
        for n in try leaf.extensions.subjectAlternativeNames ?? SubjectAlternativeNames([]) {
            switch n {
            case .dnsName(let d): names.append(d)
            case .ipAddress(let ip):
                let b = Array(ip.bytes)
                if b.count == 4 { names.append(b.map(String.init).joined(separator: ".")) }
                if b.count == 16 { names.append(stride(from: 0, to: 16, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }.joined(separator: ":")) }
            default: break
            }
        }
        return (names, leaf.notValidAfter)
    }

    /// `cert renew`: a new TLS key and certificate from the private CA, for `hostnames` (else
    /// the current certificate's), put in place of the old ones. Laptops pin the CA, not the
    /// certificate, so nothing changes for them; a running `serve` takes it when restarted.
    public func renewTLS(caKeyPEM: String, hostnames: [String], now: Date = Date()) throws -> (names: [String], notAfter: Date) {
        let ca = try Certificate(pemEncoded: try read(caCertPath))
        let caKey: Certificate.PrivateKey
        do { caKey = try Certificate.PrivateKey(pemEncoded: caKeyPEM) } catch { throw ServerError("the CA key file is not a PEM private key") }
        guard caKey.publicKey == ca.publicKey else { throw ServerError("the CA key is not this server's CA (\(caCertPath)): it cannot issue its certificates") }
        let names = hostnames.isEmpty ? try tlsCertificate().names : hostnames
        let (leaf, leafKey) = try Self.issueTLS(names: names, ca: ca, caKey: caKey, now: now)
        // Written beside, then renamed over the old files: a crash leaves the old pair or the new.
        for path in [tlsKeyPath + ".new", tlsCertPath + ".new"] { unlink(path) }
        try write(tlsKeyPath + ".new", Array(try leafKey.serializeAsPEM().pemString.utf8), secret: true)
        try write(tlsCertPath + ".new", Array((try leaf.serializeAsPEM().pemString + "\n" + ca.serializeAsPEM().pemString).utf8), secret: false)
        guard rename(tlsKeyPath + ".new", tlsKeyPath) == 0, rename(tlsCertPath + ".new", tlsCertPath) == 0 else {
            throw ServerError("cannot put the new certificate in place: \(Self.errno())")
        }
        return (names.isEmpty ? ["localhost"] : names, leaf.notValidAfter)
    }

    /// `sha256:HEX` of the CA certificate's DER bytes.
    public static func pin(caPEM: String) throws -> String {
        let cert = try Certificate(pemEncoded: caPEM)
        var ser = DER.Serializer()
        try ser.serialize(cert)
        return "sha256:" + Array(SHA256.hash(data: ser.serializedBytes)).hex
    }

    static func matches(_ name: GeneralName, _ text: String) -> Bool {
        switch name {
        case .dnsName(let d): return d == text
        case .ipAddress(let o): return Self.ipBytes(text).map { Array(o.bytes) == $0 } ?? false
        default: return false
        }
    }

    static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }

    /// Writes a new file, never over an existing one, readable by others only if not `secret`.
    /// A secret is 0600 from its first byte: created so under a temporary name (O_EXCL), written,
    /// synced, then linked to its name (which fails if the name exists) and the temporary name
    /// removed. Nothing is ever readable by others, whatever the umask.
    func write(_ path: String, _ bytes: [UInt8], secret: Bool) throws {
        let temporary = path + ".partial-\(UInt32.random(in: 0 ... .max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, secret ? 0o600 : 0o644)
        guard fd >= 0 else { throw ServerError("cannot write \(path): \(Self.errno())") }
        defer { unlink(temporary) }
        var ok = true
        bytes.withUnsafeBytes { raw in
            var done = 0
            while ok && done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n > 0 { done += n } else if n < 0 && Glibc.errno == EINTR { continue } else { ok = false }
            }
        }
        // The umask may have taken bits off a public file's 0644; a secret's 0600 it cannot widen.
        ok = ok && fchmod(fd, secret ? 0o600 : 0o644) == 0 && fsync(fd) == 0
        if ok, (path as NSString).deletingLastPathComponent == directory, let owner = folderOwnerIfRoot() {
            ok = fchown(fd, owner.uid, owner.gid) == 0
        }
        let reason = Self.errno()
        close(fd)
        guard ok else { throw ServerError("cannot write \(path): \(reason)") }
        guard link(temporary, path) == 0 else { throw ServerError("cannot write \(path): \(Self.errno())") }
    }

    static func errno() -> String { String(cString: strerror(Glibc.errno)) }

    /// The folder's owner, when this command runs as root and the folder belongs to someone
    /// else: what root makes in it (`init`, `cert renew`, `restore`) is given to that user, who
    /// runs `serve` and must read it.
    func folderOwnerIfRoot() -> (uid: uid_t, gid: gid_t)? {
        guard geteuid() == 0 else { return nil }
        var st = stat()
        guard stat(directory, &st) == 0, st.st_uid != 0 else { return nil }
        return (st.st_uid, st.st_gid)
    }

    /// Gives an existing file in the folder to its owner (see `folderOwnerIfRoot`). Opened
    /// without following a link, so a link planted in the folder cannot hand root's files away.
    func giveToFolderOwner(_ path: String) throws {
        guard let owner = folderOwnerIfRoot() else { return }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw ServerError("cannot give \(path) to the folder's owner: \(Self.errno())") }
        defer { close(fd) }
        guard fchown(fd, owner.uid, owner.gid) == 0 else { throw ServerError("cannot give \(path) to the folder's owner: \(Self.errno())") }
    }

    /// The key files `serve` reads, and the CA key if an older `init` left it here.
    public var secretPaths: [String] { [serverKeyPath, tlsKeyPath, directory + "/ca.key"] }

    /// `serve` refuses to start on a key file that its group or others may read or write.
    public func checkSecretModes() throws {
        for path in secretPaths {
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            if st.st_mode & 0o077 != 0 {
                throw ServerError("\(path) is mode \(String(st.st_mode & 0o777, radix: 8)), readable by others: run `chmod 600 \(path)` (and consider the key exposed)")
            }
        }
    }

    /// The database and its WAL and shared-memory files, 0600. SQLite gives the -wal and -shm
    /// files the mode of the database, so a database made 0600 keeps them so; an older one
    /// (0644) is tightened here, with the files it already has.
    func tightenDatabase() throws {
        for path in [databasePath, databasePath + "-wal", databasePath + "-shm"] where FileManager.default.fileExists(atPath: path) {
            guard chmod(path, 0o600) == 0 else { throw ServerError("cannot make \(path) private (mode 0600): \(Self.errno())") }
            try giveToFolderOwner(path)
        }
    }

    func read(_ path: String) throws -> String {
        guard let d = FileManager.default.contents(atPath: path), let s = String(data: d, encoding: .utf8) else {
            if FileManager.default.fileExists(atPath: path) {
                throw ServerError("cannot read \(path): \(access(path, R_OK) == 0 ? "not text" : Self.errno()) (run this as the user who owns \(directory), e.g. `runuser -u fieldsync --`)")
            }
            throw ServerError("cannot read \(path): run `fieldsync-server init --data \(directory)` first")
        }
        return s
    }

    public func serverKey() throws -> DeviceKey {
        guard let raw = [UInt8](hex: try read(serverKeyPath).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ServerError("\(serverKeyPath) is not a server key")
        }
        return try DeviceKey(rawRepresentation: raw)
    }

    public func tlsMaterial() throws -> (chainPEM: String, keyPEM: String) { (try read(tlsCertPath), try read(tlsKeyPath)) }
    public func caPEM() throws -> String { try read(caCertPath) }

    /// `init --postgres`: the keys and certificates here, the data in the database at `url`. The
    /// database is checked first, so a database that already holds a server is refused before
    /// anything is written.
    public func initialise(hostnames: [String], caKeyOut: String? = nil, postgres url: PostgresURL, logger: Logger) async throws -> InitResult {
        let directory = self.directory
        return try await PostgresSyncStore.with(url, maxConnections: 2, logger: logger) { store in
            if try await store.meta("server_public_key") != nil {
                throw ServerError("the PostgreSQL database already holds a fieldsync server; a second server needs its own database (or schema=NAME)")
            }
            let result = try ServerData(directory: directory).initialise(hostnames: hostnames, caKeyOut: caKeyOut, sqlite: false)
            guard try await store.setMetaOnce("server_public_key", result.serverPublicKey.hex) else {
                throw ServerError("another server was initialised in this PostgreSQL database at the same time; remove \(directory) and try again")
            }
            return result
        }
    }

    /// After `migrate`: the folder says its data is now in PostgreSQL.
    func markPostgres(movedFrom: String) throws {
        try write(postgresMarkerPath, Array("""
            this server's data is in PostgreSQL since \(Timestamps.iso(Timestamps.nowMillis)): give fieldsync-server --postgres URL.
            server.sqlite is kept as it was before the move, and is no longer served.

            """.utf8), secret: false)
    }

    /// Runs `body` with this server's store: PostgreSQL at `postgres` (whose server key must be
    /// the one in this folder), else the SQLite database in this folder.
    public func withStore<T: Sendable>(postgres: PostgresURL?, logger: Logger, maxConnections: Int = 16,
                                       _ body: @escaping @Sendable (any SyncStoreAdmin) async throws -> T) async throws -> T {
        if let postgres {
            let key = try serverKey()
            let directory = self.directory
            return try await PostgresSyncStore.with(postgres, maxConnections: maxConnections, logger: logger) { store in
                guard let stored = try await store.meta("server_public_key") else {
                    throw ServerError("the PostgreSQL database holds no fieldsync server: run `fieldsync-server init --data \(directory) --postgres URL` first")
                }
                guard stored == key.publicKey.hex else {
                    throw ServerError("the PostgreSQL database belongs to another server: its key is not the one in \(directory)")
                }
                return try await body(store)
            }
        }
        // A folder whose data moved to PostgreSQL keeps its old SQLite file, untouched: serving it
        // again would fork the server in two.
        if FileManager.default.fileExists(atPath: postgresMarkerPath) {
            throw ServerError("\(directory) belongs to a server on PostgreSQL: give --postgres URL (or FIELDSYNC_POSTGRES_URL)")
        }
        return try await body(SQLiteSyncStore(try openStore()))
    }

    public func openStore() throws -> ReplicaStore {
        guard FileManager.default.fileExists(atPath: databasePath) else {
            throw ServerError("no server in \(directory): run `fieldsync-server init --data \(directory)` first")
        }
        if chmod(directory, 0o700) != 0 { throw ServerError("cannot make \(directory) private (mode 0700): \(Self.errno())") }
        let store = try ReplicaStore.open(path: databasePath, server: true)
        try tightenDatabase()
        return store
    }
}

public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
