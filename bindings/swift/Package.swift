// swift-tools-version:5.9
// The Swift binding of libsda: a system-library module over the installed sda.h (found through
// pkg-config "sda": set PKG_CONFIG_PATH=<prefix>/lib/pkgconfig) and a thin Swift layer on top.
import PackageDescription

let package = Package(
    name: "Sda",
    products: [
        .library(name: "Sda", targets: ["Sda"]),
    ],
    targets: [
        // The C API as it is: a module map over sda.h, linking libsda.
        .systemLibrary(
            name: "CSda",
            pkgConfig: "sda",
            providers: [.apt(["libsda-dev"])]
        ),
        // Swift types over it: final classes that free their handle in deinit, errors thrown from the
        // status and the library's message, closures as guarded-run work.
        .target(name: "Sda", dependencies: ["CSda"]),
        .testTarget(name: "SdaTests", dependencies: ["Sda"]),
    ]
)
