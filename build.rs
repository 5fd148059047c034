//! Build script: finds the FFmpeg libraries *before* ffmpeg-sys-next runs bindgen and the linker, so
//! a machine without them gets one clear message (what to install, which variables to set) instead
//! of a bindgen or linker error; and records the FFmpeg version the binary is built against, for
//! `video-worker --version` (`env!("VW_FFMPEG_VERSION")`, `env!("VW_LIBAVCODEC_VERSION")`).
//!
//! Discovery follows ffmpeg-sys-next: `FFMPEG_DIR` (a prefix with `include/` and `lib/`) wins when
//! set, otherwise pkg-config (which honours `PKG_CONFIG_PATH`). Nothing is linked from here: this
//! script only probes (`cargo_metadata(false)`); ffmpeg-sys-next emits the link flags.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The libraries ffmpeg-next 9 links with the features Cargo.toml enables (codec, filter, format,
/// software-scaling; not device or software-resampling), as pkg-config module names.
const LIBRARIES: [&str; 5] = [
    "libavcodec",
    "libavformat",
    "libavutil",
    "libswscale",
    "libavfilter",
];

/// What a Debian 12 (bookworm) machine needs; `libclang-dev` is for ffmpeg-sys-next's bindgen.
const APT_INSTALL: &str = "apt-get install pkg-config libclang-dev libavcodec-dev \
     libavformat-dev libavutil-dev libswscale-dev libavfilter-dev";

/// What the binary was built against, for `--version`.
struct FfmpegVersion {
    /// `FFMPEG_VERSION` from `libavutil/ffversion.h` (e.g. "5.1.9-0+deb12u1"), or the libavcodec
    /// version when that header is absent.
    ffmpeg: String,
    /// libavcodec's own version (e.g. "59.37.100"): what decides ABI compatibility.
    libavcodec: String,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "FFMPEG_DIR",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
        "LIBCLANG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let found = match env::var_os("FFMPEG_DIR") {
        Some(dir) if !dir.is_empty() => probe_ffmpeg_dir(Path::new(&dir)),
        _ => probe_pkg_config(),
    };
    let version = match found {
        Ok(version) => version,
        Err(problems) => fail(&problems),
    };

    println!("cargo:rustc-env=VW_FFMPEG_VERSION={}", version.ffmpeg);
    println!(
        "cargo:rustc-env=VW_LIBAVCODEC_VERSION={}",
        version.libavcodec
    );

    warn_if_libclang_missing();
}

/// Probes every library with pkg-config; on success reads the FFmpeg version from the headers
/// pkg-config points at. On failure returns one line per missing library.
fn probe_pkg_config() -> Result<FfmpegVersion, Vec<String>> {
    let mut problems = Vec::new();
    let mut include_paths: Vec<PathBuf> = Vec::new();
    let mut libavcodec_version = None;

    for name in LIBRARIES {
        let probed = pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe(name);
        match probed {
            Ok(library) => {
                if name == "libavcodec" {
                    libavcodec_version = Some(library.version.clone());
                }
                for path in library.include_paths {
                    if !include_paths.contains(&path) {
                        include_paths.push(path);
                    }
                }
            }
            Err(pkg_config::Error::Command { cause, .. }) => {
                // No pkg-config binary: every probe would fail the same way, say it once.
                return Err(vec![format!("cannot run `pkg-config` ({cause})")]);
            }
            Err(error) => problems.push(format!("{name}: {}", pkg_config_reason(&error))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // pkg-config drops default include dirs such as /usr/include from --cflags; look there too.
    for default in ["/usr/include", "/usr/local/include"] {
        let default = PathBuf::from(default);
        if !include_paths.contains(&default) {
            include_paths.push(default);
        }
    }
    let libavcodec = libavcodec_version.unwrap_or_else(|| "unknown".to_owned());
    let ffmpeg = read_ffmpeg_version(&include_paths).unwrap_or_else(|| libavcodec.clone());
    Ok(FfmpegVersion { ffmpeg, libavcodec })
}

/// The useful line of a pkg-config failure (its `Display` repeats the whole command line).
fn pkg_config_reason(error: &pkg_config::Error) -> String {
    let stderr = match error {
        pkg_config::Error::Failure { output, .. }
        | pkg_config::Error::ProbeFailure { output, .. } => {
            String::from_utf8_lossy(&output.stderr).into_owned()
        }
        other => other.to_string(),
    };
    stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("not found by pkg-config")
        .to_owned()
}

/// `FFMPEG_DIR` mode, as in ffmpeg-sys-next: headers in `$FFMPEG_DIR/include`, libraries in
/// `$FFMPEG_DIR/lib` (static `.a` or shared `.so`).
fn probe_ffmpeg_dir(dir: &Path) -> Result<FfmpegVersion, Vec<String>> {
    let include = dir.join("include");
    let lib = dir.join("lib");
    let mut problems = Vec::new();
    for name in LIBRARIES {
        let short = name.trim_start_matches("lib");
        let header = include.join(name).join(format!("{short}.h"));
        let mut missing = Vec::new();
        if !header.is_file() {
            missing.push(header.display().to_string());
        }
        if !has_library_file(&lib, name) {
            missing.push(format!("{name}.so or {name}.a in {}", lib.display()));
        }
        if !missing.is_empty() {
            problems.push(format!(
                "{name}: FFMPEG_DIR has no {}",
                missing.join(", no ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let include_paths = [include.clone()];
    let libavcodec = read_libavcodec_version(&include).unwrap_or_else(|| "unknown".to_owned());
    let ffmpeg = read_ffmpeg_version(&include_paths).unwrap_or_else(|| libavcodec.clone());
    Ok(FfmpegVersion { ffmpeg, libavcodec })
}

/// True when `dir` (or its per-architecture subfolder, as ffmpeg-sys-next looks for) holds
/// `name.a`, `name.so` or `name.so.N`.
fn has_library_file(dir: &Path, name: &str) -> bool {
    let arch_dir = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => Some(dir.join("amd64")),
        Ok("aarch64") => Some(dir.join("arm64")),
        Ok("arm") => Some(dir.join("armhf")),
        _ => None,
    };
    [Some(dir.to_path_buf()), arch_dir]
        .into_iter()
        .flatten()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| {
            let file = entry.file_name();
            let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(name)) else {
                return false;
            };
            rest == ".a"
                || rest == ".so"
                || rest.starts_with(".so.")
                || (rest.starts_with('.') && rest.ends_with(".dylib"))
        })
}

/// `FFMPEG_VERSION` from the first `libavutil/ffversion.h` found; registers it for rerun, so an
/// FFmpeg upgrade (e.g. a Debian point release) updates what `--version` prints.
fn read_ffmpeg_version(include_paths: &[PathBuf]) -> Option<String> {
    include_paths.iter().find_map(|dir| {
        let header = dir.join("libavutil").join("ffversion.h");
        let text = fs::read_to_string(&header).ok()?;
        println!("cargo:rerun-if-changed={}", header.display());
        define_value(&text, "FFMPEG_VERSION").map(|v| v.trim_matches('"').to_owned())
    })
}

/// `MAJOR.MINOR.MICRO` of libavcodec from its headers (`version_major.h` holds the major number
/// since FFmpeg 5.1, `version.h` before).
fn read_libavcodec_version(include: &Path) -> Option<String> {
    let dir = include.join("libavcodec");
    let mut text = fs::read_to_string(dir.join("version.h")).ok()?;
    if let Ok(major) = fs::read_to_string(dir.join("version_major.h")) {
        text.push_str(&major);
    }
    let part = |what: &str| define_value(&text, &format!("LIBAVCODEC_VERSION_{what}"));
    let mut version = part("MAJOR")?;
    for what in ["MINOR", "MICRO"] {
        let _ = write!(version, ".{}", part(what)?);
    }
    Some(version)
}

/// The value of `#define NAME value` in a C header.
fn define_value(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "#define" || words.next()? != name {
            return None;
        }
        let value = words.collect::<Vec<_>>().join(" ");
        (!value.is_empty()).then_some(value)
    })
}

/// ffmpeg-sys-next generates its bindings with bindgen, which loads libclang at build time; its
/// error when libclang is missing does not say which package provides it. Only a warning: clang-sys
/// searches more places than this does.
fn warn_if_libclang_missing() {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || env::var_os("LIBCLANG_PATH").is_some()
    {
        return;
    }
    let mut dirs: Vec<PathBuf> = ["/usr/lib", "/usr/lib64", "/usr/local/lib"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for parent in ["/usr/lib", "/usr/lib64"] {
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("llvm") {
                    dirs.push(entry.path().join("lib"));
                } else if name.ends_with("-linux-gnu") {
                    dirs.push(entry.path());
                }
            }
        }
    }
    let found = dirs
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libclang") && name.contains(".so")
        });
    if !found {
        println!(
            "cargo:warning=libclang not found (ffmpeg-sys-next's bindgen needs it): \
             install it with `{APT_INSTALL}` or set LIBCLANG_PATH"
        );
    }
}

/// Stops the build with one message: what is missing, what to install, what to set.
fn fail(problems: &[String]) -> ! {
    let mut message =
        String::from("\n\nvideo-worker: the FFmpeg development libraries were not found.\n\n");
    for problem in problems {
        let _ = writeln!(message, "  - {problem}");
    }
    let _ = write!(
        message,
        "\nOn Debian 12 / Ubuntu, install them (as root, or with sudo):\n\n    \
         {APT_INSTALL}\n\n\
         (or run ./scripts/setup.sh, which installs everything the build and tests need).\n\n\
         To build against a custom FFmpeg build instead (see vendor-notes.md), either:\n  \
         - set PKG_CONFIG_PATH to the folder holding its libavcodec.pc etc. \
         (e.g. /opt/ffmpeg/lib/pkgconfig), or\n  \
         - set FFMPEG_DIR to its install prefix (with include/ and lib/ inside); \
         ffmpeg-sys-next then skips pkg-config.\n\n"
    );
    eprintln!("{message}");
    std::process::exit(1);
}
