//! A look at shared objects before `dlopen` maps them: is any of them cut short?
//!
//! The dynamic loader maps a library's loadable segments straight from the file and does not check
//! that the file is as long as they are: the pages past the end of a truncated file (an interrupted
//! copy or `pip install`) are mapped all the same, and the first access to one — while the loader
//! relocates, or later when code there runs — kills the process with SIGBUS. A host must get an
//! error message instead, so before the backend module is opened, the module and the libraries it
//! would load from the same places (`LD_LIBRARY_PATH`, its RUNPATH/RPATH, recursively: libtorch and
//! what libtorch brings) are checked against the extent of their loadable segments.
//!
//! Only headers are read (a few KiB per library, not the half gigabyte of libtorch). Anything this
//! check does not understand (another ELF class or byte order, a library found only through the
//! system's cache) is left to the loader: the check refuses only files that are provably too short.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A library whose file is shorter than its loadable segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Truncated {
    /// The library's path (as the loader would find it).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The bytes its loadable segments need.
    pub needed: u64,
}

/// Most libraries looked at (libtorch with a CUDA wheel brings a few dozen).
const MAX_FILES: usize = 256;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// The first library, starting with `module` itself, that is cut short; `None` when every file that
/// could be checked is whole. `ld_library_path` is the process's `LD_LIBRARY_PATH`.
pub(crate) fn find_truncated(module: &Path, ld_library_path: Option<&str>) -> Option<Truncated> {
    let env_dirs: Vec<PathBuf> = ld_library_path
        .unwrap_or("")
        .split([':', ';'])
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    let mut seen = HashSet::new();
    let mut queue = vec![module.to_path_buf()];
    while let Some(path) = queue.pop() {
        if seen.len() >= MAX_FILES {
            break;
        }
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !seen.insert(key) {
            continue;
        }
        let Some(info) = read(&path) else { continue };
        if info.size < info.extent {
            return Some(Truncated {
                path,
                size: info.size,
                needed: info.extent,
            });
        }
        let own_dirs = expand(&info.search_path, &path);
        for name in info.needed {
            let found = if name.contains('/') {
                Some(PathBuf::from(&name))
            } else {
                env_dirs
                    .iter()
                    .chain(own_dirs.iter())
                    .map(|d| d.join(&name))
                    .find(|p| p.is_file())
            };
            queue.extend(found);
        }
    }
    None
}

/// The directories a library's own RUNPATH (or RPATH) names, `$ORIGIN` expanded; empty when it has
/// none or cannot be read.
pub(crate) fn search_dirs(path: &Path) -> Vec<PathBuf> {
    let Some(info) = read(path) else {
        return Vec::new();
    };
    expand(&info.search_path, path)
}

/// A RUNPATH's directories with `$ORIGIN` (the library's own directory) expanded.
fn expand(search_path: &str, library: &Path) -> Vec<PathBuf> {
    let origin = library
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    search_path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)))
        .collect()
}

struct ElfInfo {
    size: u64,
    /// End of the last loadable segment's bytes in the file.
    extent: u64,
    needed: Vec<String>,
    /// DT_RUNPATH, or DT_RPATH when there is none.
    search_path: String,
}

fn read_at(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    if len > (16 << 20) {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[o..o + 4].try_into().unwrap_or_default(),
    ))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

/// Reads what the check needs from a 64-bit little-endian ELF file; `None` for anything else (or
/// anything malformed: the loader will say what is wrong with it).
fn read(path: &Path) -> Option<ElfInfo> {
    let file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let ehdr = read_at(&file, 0, 64)?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&ehdr, 0x20),
        u16_at(&ehdr, 0x36),
        u16_at(&ehdr, 0x38),
    );
    if phentsize < 56 || phnum == 0 {
        return None;
    }
    // The program headers themselves lie past the end of a file cut very short.
    if phoff.checked_add(phentsize * phnum)? > size {
        return Some(ElfInfo {
            size,
            extent: phoff + phentsize * phnum,
            needed: Vec::new(),
            search_path: String::new(),
        });
    }
    let phdrs = read_at(&file, phoff, phentsize * phnum)?;
    // (type, offset, vaddr, filesz)
    let segments: Vec<(u32, u64, u64, u64)> = (0..phnum as usize)
        .map(|i| {
            let p = i * phentsize as usize;
            (
                u32_at(&phdrs, p) as u32,
                u64_at(&phdrs, p + 8),
                u64_at(&phdrs, p + 16),
                u64_at(&phdrs, p + 32),
            )
        })
        .collect();
    let extent = segments
        .iter()
        .filter(|s| s.0 == PT_LOAD)
        .filter_map(|s| s.1.checked_add(s.3))
        .max()
        .unwrap_or(0);
    let mut info = ElfInfo {
        size,
        extent,
        needed: Vec::new(),
        search_path: String::new(),
    };
    if size < extent {
        return Some(info);
    }
    let Some(&(_, dyn_off, _, dyn_size)) = segments.iter().find(|s| s.0 == PT_DYNAMIC) else {
        return Some(info);
    };
    let dynamic = read_at(&file, dyn_off, dyn_size)?;
    let (mut strtab, mut strsz, mut runpath, mut rpath) = (None, None, None, None);
    let mut needed = Vec::new();
    for e in dynamic.chunks_exact(16) {
        let (tag, val) = (u64_at(e, 0), u64_at(e, 8));
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_RUNPATH => runpath = Some(val),
            DT_RPATH => rpath = Some(val),
            _ => {}
        }
    }
    let (strtab, strsz) = (strtab?, strsz?);
    let load = segments
        .iter()
        .find(|s| s.0 == PT_LOAD && s.2 <= strtab && strtab < s.2.saturating_add(s.3))?;
    let strings = read_at(&file, strtab - load.2 + load.1, strsz)?;
    let string = |offset: u64| -> Option<String> {
        let rest = strings.get(offset as usize..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    info.needed = needed.into_iter().filter_map(string).collect();
    info.search_path = runpath.or(rpath).and_then(string).unwrap_or_default();
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary itself: a whole ELF file with NEEDED entries.
    fn me() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn a_whole_file_passes_and_a_cut_one_is_named_with_its_sizes() {
        assert_eq!(find_truncated(&me(), None), None);
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(me()).unwrap();
        let info = read(&me()).unwrap();
        assert!(info.extent > 4096 && info.extent <= bytes.len() as u64);
        for cut in [info.extent - 1, info.extent / 2, 100] {
            let p = dir.path().join(format!("cut-{cut}"));
            std::fs::write(&p, &bytes[..cut as usize]).unwrap();
            let t = find_truncated(&p, None).expect("a cut file is found");
            assert_eq!(t.path, p);
            assert_eq!(t.size, cut);
            assert!(t.needed > cut);
        }
    }

    #[test]
    fn a_cut_dependency_is_found_through_ld_library_path() {
        // A copy of a library this binary needs, cut short, in a directory named by LD_LIBRARY_PATH.
        let info = read(&me()).unwrap();
        let Some(name) = info
            .needed
            .iter()
            .find(|n| n.starts_with("libgcc_s") || n.starts_with("libc.so"))
        else {
            return;
        };
        let real = [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
        ]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
        let Some(real) = real else { return };
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&real).unwrap();
        std::fs::write(dir.path().join(name), &bytes[..bytes.len() / 3]).unwrap();
        let t = find_truncated(&me(), dir.path().to_str()).expect("the cut dependency is found");
        assert_eq!(t.path, dir.path().join(name));
    }

    #[test]
    fn files_that_are_not_elf_are_left_to_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("text.so");
        std::fs::write(&p, "not an ELF file").unwrap();
        assert_eq!(find_truncated(&p, None), None);
        assert_eq!(find_truncated(&dir.path().join("missing.so"), None), None);
    }
}
