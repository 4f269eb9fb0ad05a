// swift-tools-version:5.9
// The Swift binding of libsda: a system-library module over the installed sda.h and a thin Swift layer
// on top. Linux and macOS alike find libsda through pkg-config "sda", from an installed prefix
// (`make install PREFIX=<prefix>`, cmake/CMakeLists.txt):
//
//   export PKG_CONFIG_PATH=<prefix>/lib/pkgconfig       # macOS: pkg-config from Homebrew or MacPorts
//   swift build -Xlinker -rpath -Xlinker <prefix>/lib
//   swift test  -Xlinker -rpath -Xlinker <prefix>/lib
//
// The run path is needed on both: pkg-config's Libs carry none (sda.pc's rpath_flag is the same flag),
// and on macOS libsda's install name is @rpath/libsda.<abi>.dylib, which dyld resolves through the
// program's (or the XCTest bundle's) run paths; DYLD_LIBRARY_PATH is no substitute there, since
// System Integrity Protection strips it from processes started through /usr/bin tools. The backend
// module (lib/libsda_torch.so / .dylib) is found by libsda beside itself, so nothing else is needed.
//
// Tested on Linux (bindings/swift/run-tests.sh: Debian 13's Swift against an installed prefix); the
// macOS path (pkg-config, the @rpath install name) is the same package unchanged but has never been
// built on a Mac. Windows is not supported by this package (no pkg-config-based system library there).
//
// No `providers`: no system package manager (apt, Homebrew) ships libsda, so a hint such as
// `apt install libsda-dev` or `brew install sda` would send a user to a package that does not exist.
import PackageDescription

let package = Package(
    name: "Sda",
    // libsda for macOS is built for Apple silicon (aarch64-apple-darwin, whose minimum is macOS 11).
    platforms: [.macOS(.v11)],
    products: [
        .library(name: "Sda", targets: ["Sda"]),
    ],
    targets: [
        // The C API as it is: a module map over sda.h, linking libsda (`link "sda"`: -lsda, which
        // finds libsda.so on Linux and libsda.dylib on macOS in the -L folder pkg-config gives).
        .systemLibrary(
            name: "CSda",
            pkgConfig: "sda"
        ),
        // Swift types over it: final classes that free their handle in deinit, errors thrown from the
        // status and the library's message, closures as guarded-run work.
        .target(name: "Sda", dependencies: ["CSda"]),
        .testTarget(name: "SdaTests", dependencies: ["Sda"]),
    ]
)
