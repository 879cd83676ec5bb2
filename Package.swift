// swift-tools-version:6.1
import PackageDescription

// Warnings in our own code are errors in CI (see .ci/run); dependencies are left alone.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "fieldsync",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "FieldSyncCore", targets: ["FieldSyncCore"]),
        .library(name: "FieldSyncStore", targets: ["FieldSyncStore"]),
        .library(name: "FieldSyncClient", targets: ["FieldSyncClient"]),
        .executable(name: "fieldsync", targets: ["fieldsync"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
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
        .target(
            name: "FieldSyncStore",
            dependencies: ["FieldSyncCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict,
            plugins: ["EmbedSchema"]
        ),
        .target(
            name: "FieldSyncClient",
            dependencies: ["FieldSyncCore", "FieldSyncStore"],
            path: "Client/FieldSyncClient",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fieldsync",
            dependencies: ["FieldSyncClient", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Client/fieldsync",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fieldsync-demo",
            dependencies: ["FieldSyncCore"],
            path: "Tools/fieldsync-demo",
            swiftSettings: strict
        ),
        .testTarget(name: "FieldSyncCoreTests", dependencies: ["FieldSyncCore"], swiftSettings: strict),
        .testTarget(name: "FieldSyncStoreTests", dependencies: ["FieldSyncStore"], swiftSettings: strict),
        .testTarget(name: "FieldSyncClientTests", dependencies: ["FieldSyncClient"], exclude: ["Fixtures"], swiftSettings: strict),
    ]
)
