//! A look at shared libraries before the loader maps them: is any of them cut short?
//!
//! The dynamic loader maps a library's loadable segments straight from the file and does not check
//! that the file is as long as they are: the pages past the end of a truncated file (an interrupted
//! copy or `pip install`) are mapped all the same, and the first access to one — while the loader
//! relocates, or later when code there runs — kills the process with SIGBUS. A host must get an
//! error message instead, so before the backend module is opened, the module and the libraries it
//! would load from the same places are checked against the extent of their loadable parts:
//!
//! - ELF (Linux): `PT_LOAD` segments; dependencies are `DT_NEEDED`, looked for in `LD_LIBRARY_PATH`
//!   and the library's `DT_RUNPATH`/`DT_RPATH` (`$ORIGIN` expanded);
//! - Mach-O (macOS), thin or universal ("fat", every slice must be whole): `LC_SEGMENT(_64)`;
//!   dependencies are `LC_LOAD_DYLIB` and kin, `@rpath/` resolved through `LC_RPATH`
//!   (`@loader_path` expanded), `DYLD_LIBRARY_PATH` first;
//! - PE (Windows): the raw data of every section; dependencies are the import table's DLLs, looked
//!   for beside the library, then on `PATH`.
//!
//! Headers are read with the `object` crate through a read cache: only the few KiB the check needs,
//! not the half gigabyte of libtorch. Anything it does not understand (another format, a library
//! found only through the system's cache) is left to the loader: the check refuses only files that
//! are provably too short. The format is told by each file's magic, so every format is checked (and
//! tested) on every OS.

use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::macho::{FatArch, LoadCommandVariant, MachHeader, MachOFatFile};
use object::read::pe::{ImageNtHeaders, ImportTable};
use object::read::{ReadCache, ReadRef};
use object::{elf, macho, pe, Endianness, FileKind, LittleEndian as LE};
use std::collections::HashSet;
use std::fs::File;
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
/// The most bytes read for one table (a string table, an import directory).
const MAX_TABLE: u64 = 16 << 20;

/// The executable formats, which resolve their dependencies differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Elf,
    MachO,
    Pe,
}

/// What the check needs to know of one library.
#[derive(Debug)]
struct ImageInfo {
    format: Format,
    size: u64,
    /// End of the last loadable bytes in the file.
    extent: u64,
    /// The names of the libraries it needs, as written in it.
    needed: Vec<String>,
    /// Its own search directories (RUNPATH or RPATH; LC_RPATH), as written in it.
    search_path: Vec<String>,
}

impl ImageInfo {
    fn new(format: Format, size: u64, extent: u64) -> ImageInfo {
        ImageInfo {
            format,
            size,
            extent,
            needed: Vec::new(),
            search_path: Vec::new(),
        }
    }
}

/// The first library, starting with `module` itself, that is cut short; `None` when every file that
/// could be checked is whole. `env_dirs` are the directories of the loader's search-path variable
/// (`LD_LIBRARY_PATH`, `DYLD_LIBRARY_PATH`, `PATH`).
pub(crate) fn find_truncated(module: &Path, env_dirs: &[PathBuf]) -> Option<Truncated> {
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
        let own_dirs = expand(&info, &path);
        for name in &info.needed {
            queue.extend(locate(info.format, name, &path, env_dirs, &own_dirs));
        }
    }
    None
}

/// The directories a library names for its dependencies (RUNPATH or RPATH, LC_RPATH, `$ORIGIN` and
/// `@loader_path` expanded; for a DLL, its own directory, which the loader searches first); empty
/// when it names none or cannot be read.
pub(crate) fn search_dirs(path: &Path) -> Vec<PathBuf> {
    read(path).map_or_else(Vec::new, |info| expand(&info, path))
}

/// The directory a library lives in, for `$ORIGIN` and `@loader_path`.
fn origin(library: &Path) -> String {
    library
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned()
}

/// A library's own search directories with `$ORIGIN`, `@loader_path` and `@executable_path`
/// expanded.
fn expand(info: &ImageInfo, library: &Path) -> Vec<PathBuf> {
    let origin = origin(library);
    match info.format {
        Format::Elf => info
            .search_path
            .iter()
            .flat_map(|p| p.split(':'))
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)))
            .collect(),
        Format::MachO => info
            .search_path
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| expand_macho(d, &origin))
            .collect(),
        Format::Pe => library
            .parent()
            .map(Path::to_path_buf)
            .into_iter()
            .collect(),
    }
}

/// A Mach-O path with `@loader_path` (the library's directory) and `@executable_path` (the
/// program's) expanded.
fn expand_macho(path: &str, origin: &str) -> PathBuf {
    let executable = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.to_string_lossy().into_owned()));
    let mut out = path.replace("@loader_path", origin);
    if let Some(exe) = executable {
        out = out.replace("@executable_path", &exe);
    }
    PathBuf::from(out)
}

/// Where the loader would find the dependency `name` of `library`, if it is a file.
fn locate(
    format: Format,
    name: &str,
    library: &Path,
    env_dirs: &[PathBuf],
    own_dirs: &[PathBuf],
) -> Option<PathBuf> {
    let in_dirs = |dirs: &mut dyn Iterator<Item = &PathBuf>, rest: &str| {
        dirs.map(|d| d.join(rest)).find(|p| p.is_file())
    };
    match format {
        Format::Elf if name.contains('/') => Some(PathBuf::from(name)),
        Format::Elf => in_dirs(&mut env_dirs.iter().chain(own_dirs), name),
        Format::MachO => {
            // dyld tries DYLD_LIBRARY_PATH with the leaf name first, whatever the install name says.
            let leaf = Path::new(name).file_name()?.to_string_lossy().into_owned();
            if let Some(found) = in_dirs(&mut env_dirs.iter(), &leaf) {
                return Some(found);
            }
            match name.strip_prefix("@rpath/") {
                Some(rest) => in_dirs(&mut own_dirs.iter(), rest),
                None => Some(expand_macho(name, &origin(library))).filter(|p| p.is_file()),
            }
        }
        Format::Pe => in_dirs(&mut own_dirs.iter().chain(env_dirs), name),
    }
}

/// Reads what the check needs from an ELF, Mach-O (thin or universal) or PE file; `None` for
/// anything else (or anything malformed: the loader will say what is wrong with it).
fn read(path: &Path) -> Option<ImageInfo> {
    let file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let cache = ReadCache::new(file);
    let data = &cache;
    match FileKind::parse(data).ok()? {
        FileKind::Elf64 => read_elf::<elf::FileHeader64<Endianness>, _>(data, size),
        FileKind::Elf32 => read_elf::<elf::FileHeader32<Endianness>, _>(data, size),
        FileKind::MachO64 => read_macho::<macho::MachHeader64<Endianness>, _>(data, 0, size),
        FileKind::MachO32 => read_macho::<macho::MachHeader32<Endianness>, _>(data, 0, size),
        FileKind::MachOFat32 => read_fat::<macho::FatArch32, _>(data, size),
        FileKind::MachOFat64 => read_fat::<macho::FatArch64, _>(data, size),
        FileKind::Pe64 => read_pe::<pe::ImageNtHeaders64, _>(data, size),
        FileKind::Pe32 => read_pe::<pe::ImageNtHeaders32, _>(data, size),
        _ => None,
    }
}

/// The `len` bytes of the data symbol `symbol` that the ELF, thin Mach-O or PE file at `path` exports,
/// read from the file without loading it (how the core learns which libtorch a backend module was
/// built for); `None` when the file does not export it or cannot be read.
pub(crate) fn exported_bytes(path: &Path, symbol: &str, len: usize) -> Option<Vec<u8>> {
    use object::{Object, ObjectSection};
    let cache = ReadCache::new(File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    let wanted = |name: &[u8]| {
        name == symbol.as_bytes() || name.strip_prefix(b"_") == Some(symbol.as_bytes())
    };
    let address = file
        .exports()
        .ok()?
        .into_iter()
        .find(|e| wanted(e.name()))?
        .address();
    let len = u64::try_from(len).ok()?;
    file.sections().find_map(|section| {
        let start = section.address();
        (start <= address && address + len <= start + section.size())
            .then(|| section.data_range(address, len).ok().flatten())
            .flatten()
            .map(<[u8]>::to_vec)
    })
}

fn string_at(strings: &[u8], offset: u64) -> Option<String> {
    let rest = strings.get(usize::try_from(offset).ok()?..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn read_elf<'a, H, R>(data: R, size: u64) -> Option<ImageInfo>
where
    H: FileHeader<Endian = Endianness>,
    R: ReadRef<'a>,
{
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let phoff: u64 = header.e_phoff(endian).into();
    let phentsize = u64::from(header.e_phentsize(endian));
    let phnum = u64::from(header.e_phnum(endian));
    if phentsize != std::mem::size_of::<H::ProgramHeader>() as u64 || phnum == 0 {
        return None;
    }
    // The program headers themselves lie past the end of a file cut very short.
    let table_end = phoff.checked_add(phentsize * phnum)?;
    if table_end > size {
        return Some(ImageInfo::new(Format::Elf, size, table_end));
    }
    let phdrs = header.program_headers(endian, data).ok()?;
    let loads = || phdrs.iter().filter(|p| p.p_type(endian) == elf::PT_LOAD);
    let extent = loads()
        .filter_map(|p| {
            let offset: u64 = p.p_offset(endian).into();
            offset.checked_add(p.p_filesz(endian).into())
        })
        .max()
        .unwrap_or(0);
    let mut info = ImageInfo::new(Format::Elf, size, extent);
    if size < extent {
        return Some(info);
    }
    let Some(dynamic) = phdrs
        .iter()
        .find_map(|p| p.dynamic(endian, data).ok().flatten())
    else {
        return Some(info);
    };
    let (mut strtab, mut strsz, mut runpath, mut rpath) = (None, None, None, None);
    let mut needed = Vec::new();
    for d in dynamic {
        let (tag, value): (u64, u64) = (d.d_tag(endian).into(), d.d_val(endian).into());
        match u32::try_from(tag).unwrap_or(u32::MAX) {
            elf::DT_NULL => break,
            elf::DT_NEEDED => needed.push(value),
            elf::DT_STRTAB => strtab = Some(value),
            elf::DT_STRSZ => strsz = Some(value),
            elf::DT_RUNPATH => runpath = Some(value),
            elf::DT_RPATH => rpath = Some(value),
            _ => {}
        }
    }
    let (strtab, strsz) = (strtab?, strsz?.min(MAX_TABLE));
    // The string table's address, mapped to the file through the load segment that holds it (read
    // alone: the segment itself may be hundreds of MiB).
    let offset = loads().find_map(|p| {
        let (vaddr, offset, filesz): (u64, u64, u64) = (
            p.p_vaddr(endian).into(),
            p.p_offset(endian).into(),
            p.p_filesz(endian).into(),
        );
        (vaddr <= strtab && strtab < vaddr.saturating_add(filesz)).then(|| strtab - vaddr + offset)
    })?;
    let strings = data.read_bytes_at(offset, strsz).ok()?;
    info.needed = needed
        .into_iter()
        .filter_map(|o| string_at(strings, o))
        .collect();
    info.search_path = runpath
        .or(rpath)
        .and_then(|o| string_at(strings, o))
        .into_iter()
        .collect();
    Some(info)
}

/// A thin Mach-O image at `offset` (0, or a universal file's slice).
fn read_macho<'a, M, R>(data: R, offset: u64, size: u64) -> Option<ImageInfo>
where
    M: MachHeader<Endian = Endianness>,
    R: ReadRef<'a>,
{
    let header = M::parse(data, offset).ok()?;
    let endian = header.endian().ok()?;
    let commands_end = offset
        .checked_add(std::mem::size_of::<M>() as u64)?
        .checked_add(header.sizeofcmds(endian).into())?;
    if commands_end > size {
        return Some(ImageInfo::new(Format::MachO, size, commands_end));
    }
    let mut info = ImageInfo::new(Format::MachO, size, 0);
    let mut commands = header.load_commands(endian, data, offset).ok()?;
    while let Ok(Some(command)) = commands.next() {
        let segment = match command.variant() {
            Ok(LoadCommandVariant::Segment64(s, _)) => {
                Some((s.fileoff.get(endian), s.filesize.get(endian)))
            }
            Ok(LoadCommandVariant::Segment32(s, _)) => Some((
                u64::from(s.fileoff.get(endian)),
                u64::from(s.filesize.get(endian)),
            )),
            Ok(LoadCommandVariant::Dylib(d)) => {
                if let Ok(name) = command.string(endian, d.dylib.name) {
                    info.needed.push(String::from_utf8_lossy(name).into_owned());
                }
                None
            }
            Ok(LoadCommandVariant::Rpath(r)) => {
                if let Ok(path) = command.string(endian, r.path) {
                    info.search_path
                        .push(String::from_utf8_lossy(path).into_owned());
                }
                None
            }
            _ => None,
        };
        // Segment offsets are relative to the slice.
        if let Some(end) = segment.and_then(|(o, s)| offset.checked_add(o)?.checked_add(s)) {
            info.extent = info.extent.max(end);
        }
    }
    Some(info)
}

/// The architecture of the slice dyld would pick from a universal file on this machine.
fn host_architecture() -> object::Architecture {
    if cfg!(target_arch = "aarch64") {
        object::Architecture::Aarch64
    } else {
        object::Architecture::X86_64
    }
}

/// A universal ("fat") Mach-O: every slice must be whole (a copy cut anywhere is damaged); the
/// dependencies are those of the slice for this machine (else the first).
fn read_fat<'a, F, R>(data: R, size: u64) -> Option<ImageInfo>
where
    F: FatArch,
    R: ReadRef<'a>,
{
    // The table of slices itself lies past the end of a file cut very short.
    let header = data.read_at::<macho::FatHeader>(0).ok()?;
    let table_end = (std::mem::size_of::<macho::FatHeader>() as u64).checked_add(
        u64::from(header.nfat_arch.get(object::BigEndian))
            .checked_mul(std::mem::size_of::<F>() as u64)?,
    )?;
    if table_end > size {
        return Some(ImageInfo::new(Format::MachO, size, table_end));
    }
    let fat = MachOFatFile::<F>::parse(data).ok()?;
    let arches = fat.arches();
    let slices_end = arches
        .iter()
        .filter_map(|a| {
            let (o, s) = a.file_range();
            o.checked_add(s)
        })
        .max()?;
    if slices_end > size {
        return Some(ImageInfo::new(Format::MachO, size, slices_end));
    }
    let mut extent = slices_end;
    for arch in arches {
        let (offset, _) = arch.file_range();
        let slice = match FileKind::parse_at(data, offset).ok()? {
            FileKind::MachO64 => {
                read_macho::<macho::MachHeader64<Endianness>, _>(data, offset, size)
            }
            FileKind::MachO32 => {
                read_macho::<macho::MachHeader32<Endianness>, _>(data, offset, size)
            }
            _ => None,
        }?;
        extent = extent.max(slice.extent);
    }
    let chosen = arches
        .iter()
        .find(|a| a.architecture() == host_architecture())
        .or_else(|| arches.first())?;
    let (offset, _) = chosen.file_range();
    let mut info = match FileKind::parse_at(data, offset).ok()? {
        FileKind::MachO64 => read_macho::<macho::MachHeader64<Endianness>, _>(data, offset, size),
        FileKind::MachO32 => read_macho::<macho::MachHeader32<Endianness>, _>(data, offset, size),
        _ => None,
    }?;
    info.extent = extent;
    Some(info)
}

fn read_pe<'a, P, R>(data: R, size: u64) -> Option<ImageInfo>
where
    P: ImageNtHeaders,
    R: ReadRef<'a>,
{
    let dos = pe::ImageDosHeader::parse(data).ok()?;
    let mut offset = u64::from(dos.nt_headers_offset());
    let (nt, directories) = P::parse(data, &mut offset).ok()?;
    let count = u64::from(nt.file_header().number_of_sections.get(LE));
    let table_end =
        offset.checked_add(count * std::mem::size_of::<pe::ImageSectionHeader>() as u64)?;
    if table_end > size {
        return Some(ImageInfo::new(Format::Pe, size, table_end));
    }
    let sections = nt.sections(data, offset).ok()?;
    let extent = sections
        .iter()
        .filter_map(|s| {
            let start = u64::from(s.pointer_to_raw_data.get(LE));
            start.checked_add(u64::from(s.size_of_raw_data.get(LE)))
        })
        .max()
        .unwrap_or(0)
        .max(table_end);
    let mut info = ImageInfo::new(Format::Pe, size, extent);
    if size < extent {
        return Some(info);
    }
    // The import directory alone (not the whole section that holds it, which may be large); the
    // DLL names follow the descriptors in what linkers write.
    let Some(directory) = directories.get(pe::IMAGE_DIRECTORY_ENTRY_IMPORT) else {
        return Some(info);
    };
    let va = directory.virtual_address.get(LE);
    let Some((file_offset, available)) = sections.iter().find_map(|s| s.pe_file_range_at(va))
    else {
        return Some(info);
    };
    let Ok(bytes) = data.read_bytes_at(u64::from(file_offset), u64::from(available).min(MAX_TABLE))
    else {
        return Some(info);
    };
    let table = ImportTable::new(bytes, va, va);
    if let Ok(mut descriptors) = table.descriptors() {
        while let Ok(Some(descriptor)) = descriptors.next() {
            if let Ok(name) = table.name(descriptor.name.get(LE)) {
                info.needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary itself: a whole ELF file with NEEDED entries (on Linux, where tests run).
    fn me() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Every cut of `bytes` at `cuts` is refused, naming the file and both sizes; the whole file
    /// passes.
    fn check_cuts(bytes: &[u8], extent: u64, cuts: &[u64]) {
        let dir = tempfile::tempdir().unwrap();
        let whole = write(dir.path(), "whole", bytes);
        assert_eq!(find_truncated(&whole, &[]), None);
        assert_eq!(read(&whole).unwrap().extent, extent);
        for &cut in cuts {
            let p = write(dir.path(), &format!("cut-{cut}"), &bytes[..cut as usize]);
            let t = find_truncated(&p, &[]).unwrap_or_else(|| panic!("a cut at {cut} is found"));
            assert_eq!(t.path, p);
            assert_eq!(t.size, cut);
            assert!(t.needed > cut, "{t:?}");
        }
    }

    #[test]
    fn a_whole_file_passes_and_a_cut_one_is_named_with_its_sizes() {
        if read(&me()).map(|i| i.format) != Some(Format::Elf) {
            return; // the ELF case runs where the test binary is ELF
        }
        assert_eq!(find_truncated(&me(), &[]), None);
        let bytes = std::fs::read(me()).unwrap();
        let info = read(&me()).unwrap();
        assert!(info.extent > 4096 && info.extent <= bytes.len() as u64);
        check_cuts(
            &bytes,
            info.extent,
            &[info.extent - 1, info.extent / 2, 100],
        );
    }

    #[test]
    fn a_cut_dependency_is_found_through_ld_library_path() {
        // A copy of a library this binary needs, cut short, in a directory named by LD_LIBRARY_PATH.
        let Some(info) = read(&me()) else { return };
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
        let t = find_truncated(&me(), &[dir.path().to_path_buf()])
            .expect("the cut dependency is found");
        assert_eq!(t.path, dir.path().join(name));
    }

    #[test]
    fn files_that_are_not_executables_are_left_to_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "text.so",
            b"not an ELF file, nor Mach-O, nor PE",
        );
        assert_eq!(find_truncated(&p, &[]), None);
        assert_eq!(find_truncated(&dir.path().join("missing.so"), &[]), None);
        assert!(search_dirs(&p).is_empty());
    }

    // ---- Mach-O fixtures: the few load commands the check reads, written by hand (64-bit, LE) ----

    const CPU_X86_64: u32 = 0x0100_0007;
    const CPU_ARM64: u32 = 0x0100_000c;

    fn padded(mut command: Vec<u8>) -> Vec<u8> {
        while command.len() % 8 != 0 {
            command.push(0);
        }
        let size = command.len() as u32;
        command[4..8].copy_from_slice(&size.to_le_bytes());
        command
    }

    /// A load command whose payload is one string (`LC_LOAD_DYLIB`, `LC_RPATH`).
    fn string_command(cmd: u32, fixed: &[u32], text: &str) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend(cmd.to_le_bytes());
        c.extend(0u32.to_le_bytes()); // cmdsize, set by `padded`
        let offset = 12 + 4 * fixed.len() as u32;
        c.extend(offset.to_le_bytes());
        for f in fixed {
            c.extend(f.to_le_bytes());
        }
        c.extend(text.as_bytes());
        c.push(0);
        padded(c)
    }

    /// A thin 64-bit dylib of `len` bytes: one segment covering the whole file, then the given
    /// dependencies and rpaths.
    fn macho(cpu: u32, len: u64, dylibs: &[&str], rpaths: &[&str]) -> Vec<u8> {
        let mut commands = Vec::new();
        let mut segment = Vec::new();
        segment.extend(macho::LC_SEGMENT_64.to_le_bytes());
        segment.extend(72u32.to_le_bytes());
        segment.extend(*b"__TEXT\0\0\0\0\0\0\0\0\0\0");
        for v in [0u64, len, 0, len] {
            segment.extend(v.to_le_bytes()); // vmaddr, vmsize, fileoff, filesize
        }
        for v in [5u32, 5, 0, 0] {
            segment.extend(v.to_le_bytes()); // maxprot, initprot, nsects, flags
        }
        commands.push(segment);
        for d in dylibs {
            commands.push(string_command(
                macho::LC_LOAD_DYLIB,
                &[2, 0x1_0000, 0x1_0000],
                d,
            ));
        }
        for r in rpaths {
            commands.push(string_command(macho::LC_RPATH, &[], r));
        }
        let size: usize = commands.iter().map(Vec::len).sum();
        let mut out = Vec::new();
        for v in [macho::MH_MAGIC_64, cpu, 0, macho::MH_DYLIB] {
            out.extend(v.to_le_bytes());
        }
        for v in [commands.len() as u32, size as u32, 0, 0] {
            out.extend(v.to_le_bytes()); // ncmds, sizeofcmds, flags, reserved
        }
        out.extend(commands.concat());
        assert!(out.len() as u64 <= len);
        out.resize(len as usize, 0xcc);
        out
    }

    /// A universal file with one slice per (cpu, slice) at 4 KiB boundaries (big-endian header).
    fn fat(slices: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(macho::FAT_MAGIC.to_be_bytes());
        out.extend((slices.len() as u32).to_be_bytes());
        let mut offset = 4096u32;
        let mut body = Vec::new();
        for (cpu, slice) in slices {
            for v in [*cpu, 0, offset, slice.len() as u32, 12] {
                out.extend(v.to_be_bytes());
            }
            body.push((offset, slice));
            offset += (slice.len() as u32).div_ceil(4096) * 4096;
        }
        for (at, slice) in body {
            out.resize(at as usize, 0);
            out.extend(slice);
        }
        out
    }

    #[test]
    fn a_thin_macho_is_measured_by_its_segments() {
        let bytes = macho(
            CPU_ARM64,
            8192,
            &["/usr/lib/libSystem.B.dylib"],
            &["@loader_path"],
        );
        // Cut inside the segment, and inside the load commands themselves.
        check_cuts(&bytes, 8192, &[8191, 4096, 40]);
        let info = read_macho::<macho::MachHeader64<Endianness>, _>(&bytes[..], 0, 8192).unwrap();
        assert_eq!(info.needed, ["/usr/lib/libSystem.B.dylib"]);
        assert_eq!(info.search_path, ["@loader_path"]);
    }

    #[test]
    fn a_universal_macho_needs_every_slice_whole() {
        let x86 = macho(CPU_X86_64, 4096, &[], &[]);
        let arm = macho(CPU_ARM64, 8192, &[], &[]);
        let bytes = fat(&[(CPU_X86_64, x86), (CPU_ARM64, arm)]);
        assert_eq!(bytes.len(), 4096 + 4096 + 8192);
        // Cut in the last slice, at its start, in the first slice, and in the fat header's table.
        check_cuts(&bytes, 16384, &[16383, 8192, 5000, 30]);
    }

    #[test]
    fn a_cut_macho_dependency_is_found_through_its_rpath() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        let module = write(
            dir.path(),
            "libsda_torch.dylib",
            &macho(
                CPU_ARM64,
                4096,
                &["@rpath/libtorch_cpu.dylib", "/usr/lib/libc++.1.dylib"],
                &["@loader_path/lib"],
            ),
        );
        assert_eq!(search_dirs(&module), std::slice::from_ref(&lib));
        let dependency = macho(CPU_ARM64, 8192, &[], &[]);
        write(&lib, "libtorch_cpu.dylib", &dependency);
        assert_eq!(find_truncated(&module, &[]), None);
        let cut = write(&lib, "libtorch_cpu.dylib", &dependency[..5000]);
        let t = find_truncated(&module, &[]).expect("the cut dependency is found");
        assert_eq!((t.path, t.size, t.needed), (cut, 5000, 8192));
        // DYLD_LIBRARY_PATH comes first, by leaf name.
        let env = tempfile::tempdir().unwrap();
        write(env.path(), "libtorch_cpu.dylib", &dependency);
        assert_eq!(find_truncated(&module, &[env.path().to_path_buf()]), None);
    }

    // ---- PE fixtures: written with object's PE writer ----

    /// A 64-bit DLL with a 0x800-byte `.text` and an `.rdata` holding an import directory for
    /// `imports`.
    fn dll(imports: &[&str]) -> Vec<u8> {
        use object::write::pe::{NtHeaders, Writer};
        let mut out = Vec::new();
        let mut w = Writer::new(true, 0x1000, 0x200, &mut out);
        w.reserve_dos_header_and_stub();
        w.reserve_nt_headers(16);
        w.reserve_section_headers(2);
        let text = w.reserve_text_section(0x800);
        // Descriptors (20 bytes each, a null one last), then the names.
        let names_at = 20 * (imports.len() as u32 + 1);
        let names_len: usize = imports.iter().map(|n| n.len() + 1).sum();
        let rdata = w.reserve_rdata_section(names_at + names_len as u32);
        w.set_data_directory(
            pe::IMAGE_DIRECTORY_ENTRY_IMPORT,
            rdata.virtual_address,
            names_at,
        );
        w.write_dos_header_and_stub().unwrap();
        w.write_nt_headers(NtHeaders {
            machine: pe::IMAGE_FILE_MACHINE_AMD64,
            time_date_stamp: 0,
            characteristics: pe::IMAGE_FILE_DLL | pe::IMAGE_FILE_EXECUTABLE_IMAGE,
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: 0,
            image_base: 0x1_8000_0000,
            major_operating_system_version: 6,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 6,
            minor_subsystem_version: 0,
            subsystem: pe::IMAGE_SUBSYSTEM_WINDOWS_CUI,
            dll_characteristics: 0,
            size_of_stack_reserve: 0x10_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0x10_0000,
            size_of_heap_commit: 0x1000,
        });
        w.write_section_headers();
        w.write_section(text.file_offset, &[0xc3; 0x800]);
        let mut table = Vec::new();
        let mut name_va = rdata.virtual_address + names_at;
        for name in imports {
            // original_first_thunk, time_date_stamp, forwarder_chain, name, first_thunk
            for v in [name_va, 0, 0, name_va, name_va] {
                table.extend(v.to_le_bytes());
            }
            name_va += name.len() as u32 + 1;
        }
        table.extend([0u8; 20]);
        for name in imports {
            table.extend(name.as_bytes());
            table.push(0);
        }
        w.write_section(rdata.file_offset, &table);
        out
    }

    #[test]
    fn a_pe_is_measured_by_its_sections_raw_data() {
        let bytes = dll(&[]);
        let extent = bytes.len() as u64;
        assert_eq!(
            read(&write(tempfile::tempdir().unwrap().path(), "x.dll", &bytes))
                .unwrap()
                .format,
            Format::Pe
        );
        // Cut in the last section, in the first, and in the section table.
        check_cuts(&bytes, extent, &[extent - 1, 0x500, 0x190]);
    }

    #[test]
    fn a_cut_dll_beside_the_module_is_found_through_its_imports() {
        let dir = tempfile::tempdir().unwrap();
        let module = write(
            dir.path(),
            "sda_torch.dll",
            &dll(&["torch_cpu.dll", "KERNEL32.dll"]),
        );
        assert_eq!(
            read(&module).unwrap().needed,
            ["torch_cpu.dll", "KERNEL32.dll"]
        );
        assert_eq!(search_dirs(&module), [dir.path().to_path_buf()]);
        let dependency = dll(&[]);
        write(dir.path(), "torch_cpu.dll", &dependency);
        assert_eq!(find_truncated(&module, &[]), None);
        let cut = write(dir.path(), "torch_cpu.dll", &dependency[..0x300]);
        let t = find_truncated(&module, &[]).expect("the cut DLL is found");
        assert_eq!((t.path, t.size), (cut, 0x300));
        // A DLL found only on PATH is checked too.
        let module_alone = tempfile::tempdir().unwrap();
        let lone = write(
            module_alone.path(),
            "sda_torch.dll",
            &dll(&["torch_cpu.dll"]),
        );
        assert!(find_truncated(&lone, &[dir.path().to_path_buf()]).is_some());
    }
}
