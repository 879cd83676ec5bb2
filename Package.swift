// swift-tools-version:6.1
import PackageDescription

// Warnings in our own code are errors in CI (see .ci/run); dependencies are left alone.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "fieldsync",
    platforms: [.macOS(.v15)],  // UInt128 and Synchronization.Atomic; the product targets Linux
    products: [
        .library(name: "FieldSyncCore", targets: ["FieldSyncCore"]),
        .library(name: "FieldSyncStore", targets: ["FieldSyncStore"]),
        .library(name: "FieldSyncClient", targets: ["FieldSyncClient"]),
        .library(name: "FieldSyncServer", targets: ["FieldSyncServer"]),
        .executable(name: "fieldsync", targets: ["fieldsync"]),
        .executable(name: "fieldsync-server", targets: ["fieldsync-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Turns Schema/records.json and Schema/sqlite/*.sql into Swift string constants at
        // build time, so the binaries carry their schema and need no resource bundle beside them.
        .executableTarget(name: "embed-schema", path: "Tools/embed-schema", swiftSettings: strict),
        .plugin(name: "EmbedSchema", capability: .buildTool(), dependencies: ["embed-schema"], path: "Plugins/EmbedSchema"),

        .target(
            name: "FieldSyncCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            // The merge is the hot path of every sync and of the property tests: it is optimised
            // in debug builds too (tests still reach its internals through -enable-testing).
            swiftSettings: strict + [.unsafeFlags(["-O"], .when(configuration: .debug))],
            plugins: ["EmbedSchema"]
        ),
        // gzip for sync bodies (Content-Encoding), on the system's zlib.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .target(name: "FieldSyncBodyCoding", dependencies: ["CZlib"], swiftSettings: strict),
        .target(
            name: "FieldSyncStore",
            dependencies: ["FieldSyncCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict,
            plugins: ["EmbedSchema"]
        ),
        .target(
            name: "FieldSyncClient",
            dependencies: [
                "FieldSyncCore", "FieldSyncStore", "FieldSyncBodyCoding",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Client/FieldSyncClient",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fieldsync",
            dependencies: [
                "FieldSyncClient", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "Client/fieldsync",
            swiftSettings: strict
        ),
        .target(
            name: "FieldSyncServer",
            dependencies: [
                "FieldSyncCore", "FieldSyncStore", "FieldSyncBodyCoding",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Server/FieldSyncServer",
            swiftSettings: strict,
            plugins: ["EmbedSchema"]
        ),
        .executableTarget(
            name: "fieldsync-server",
            dependencies: ["FieldSyncServer", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "PostgresNIO", package: "postgres-nio")],
            path: "Server/fieldsync-server",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fieldsync-demo",
            dependencies: ["FieldSyncCore"],
            path: "Tools/fieldsync-demo",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fieldsync-bench",
            dependencies: ["FieldSyncClient", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Crypto", package: "swift-crypto")],
            path: "Bench/fieldsync-bench",
            swiftSettings: strict
        ),
        // Fuzzing (issue 23; Fuzz/README.md): libFuzzer targets built by scripts/fuzz.sh (-sanitize=fuzzer -DFUZZING);
        // an ordinary build makes the same executable a corpus replayer, which FuzzCorpusTests runs.
        .executableTarget(
            name: "fieldsync-fuzz",
            dependencies: [
                "FieldSyncClient", "FieldSyncServer", "FieldSyncBodyCoding", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"), .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Fuzz/Sources",
            swiftSettings: strict
        ),
        .testTarget(name: "FuzzCorpusTests", dependencies: ["fieldsync-fuzz"], path: "Fuzz/Tests", swiftSettings: strict),
        .testTarget(name: "FieldSyncCoreTests", dependencies: ["FieldSyncCore"], swiftSettings: strict),
        .testTarget(name: "FieldSyncStoreTests", dependencies: ["FieldSyncStore", .product(name: "GRDB", package: "GRDB.swift")], swiftSettings: strict),
        .testTarget(
            name: "FieldSyncClientTests",
            dependencies: [
                "FieldSyncClient", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                // A certificate for another host, made in a test (`TransportTests`).
                .product(name: "X509", package: "swift-certificates"), .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FieldSyncServerTests",
            dependencies: [
                "FieldSyncServer", "FieldSyncBodyCoding",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
    ]
)
