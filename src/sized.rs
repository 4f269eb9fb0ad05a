//! The one reader and writer of the structs that cross the boundary and may grow.
//!
//! The rule (also in the header's preamble): every struct of the C ABI begins with
//! `uint32_t struct_size`, the caller's own `sizeof` of it, set by its `sda_*_init(ptr, sizeof *ptr)`
//! function (`SDA_*_INIT(ptr)` passes the size). Fields are only ever appended, after the previous
//! version's `sizeof` (no struct has tail padding a later field could move into; a unit test checks),
//! and a field added later means "as before" when it is 0. So, with `known` = this library's size:
//!
//! - `struct_size == known`: the caller and the library agree.
//! - `struct_size < known` (a program built against an older header): accepted when it ends between
//!   two fields (the end of an older version's struct always does); the fields past it take their
//!   defaults on input and are not written on output.
//! - `struct_size > known` (a program built against a newer header): input is accepted only when the
//!   bytes this library does not know are all zero (a newer field left at "as before"), else
//!   `SDA_ERR_INVALID_ARGUMENT`; output writes only the fields it knows and leaves the rest as the
//!   caller's init function set them. Linux's `copy_struct_from_user` (openat2, clone3) is the same
//!   rule.
//!
//! The library never writes a byte at or past `struct_size`, and never returns such a struct by value.
//! Arrays of them (`sda_list_devices`) take their stride from the first entry's `struct_size`.
//! Booleans in these structs are `sda_bool` (`uint32_t`), checked to be 0 or 1 on input.
//!
//! Everything here copies bytes, never a typed `T` from the caller's memory: an older caller's struct
//! may be shorter, and less aligned, than this library's `T`.

use sda_core::error::{Error, Result};
use std::mem::size_of;

/// A boolean in a C struct: 0 = false, 1 = true; any other value is refused on input (a C `bool`
/// written byte-wise by a binding could hold anything, and reading that as a Rust `bool` would be
/// undefined behaviour).
pub type sda_bool = u32;

/// The bytes of `struct_size`, the first field of every growable struct.
const SIZE_FIELD: usize = size_of::<u32>();

/// A `repr(C)` struct of the C ABI that starts with `struct_size: u32` and may grow.
///
/// # Safety
///
/// Implementors are `repr(C)`, start with `struct_size: u32` at offset 0, list every field in
/// [`Growable::for_each_field`], and — for [`read_input`] — every bit pattern of their bytes is a valid
/// value (integers, floats, raw pointers, `Option` of function pointers; no `bool`, no enum).
pub unsafe trait Growable: Copy + 'static {
    /// The C name, for messages (`sda_guard_options`).
    const NAME: &'static str;
    /// The library's defaults, `struct_size` set to this library's size.
    fn defaults() -> Self;
    /// Calls `visit(name, offset, size, align)` for every field, in order.
    fn for_each_field(visit: &mut dyn FnMut(&'static str, usize, usize, usize));
    /// Checks the values of a struct read from a caller (booleans 0 or 1).
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// Implements [`Growable`] for a struct: its fields in order, its defaults and, for input structs,
/// the check of its values.
macro_rules! growable {
    ($ty:ident { $($(#[$attr:meta])* $field:ident),+ $(,)? } defaults = $defaults:expr $(, check = $check:expr)? $(,)?) => {
        // SAFETY: the invocations of this macro (sized.rs's unit tests check each one) name repr(C)
        // structs whose first field is `struct_size: u32` and list every field in order; the
        // plain-bytes requirement of read_input holds for the three input structs, whose fields are
        // integers, sda_bool, pointers and Option<fn>.
        unsafe impl $crate::sized::Growable for $ty {
            const NAME: &'static str = stringify!($ty);
            fn defaults() -> $ty {
                $defaults
            }
            fn for_each_field(visit: &mut dyn FnMut(&'static str, usize, usize, usize)) {
                let place = std::mem::MaybeUninit::<$ty>::uninit();
                let base = place.as_ptr();
                $(
                    $(#[$attr])*
                    let () = {
                        // SAFETY: `addr_of!` computes the address of a field of `place`, which is a
                        // live (uninitialised) local: no reference is made and nothing is read.
                        let field = unsafe { std::ptr::addr_of!((*base).$field) };
                        visit(
                            stringify!($field),
                            std::mem::offset_of!($ty, $field),
                            $crate::sized::pointee_size(field),
                            $crate::sized::pointee_align(field),
                        );
                    };
                )+
            }
            $(
                fn check(&self) -> sda_core::error::Result<()> {
                    let check: fn(&$ty) -> sda_core::error::Result<()> = $check;
                    check(self)
                }
            )?
        }
    };
}
pub(crate) use growable;

/// The size of what `_ptr` points to (the type of a field, without naming it).
pub(crate) const fn pointee_size<F>(_ptr: *const F) -> usize {
    size_of::<F>()
}

/// The alignment of what `_ptr` points to.
pub(crate) const fn pointee_align<F>(_ptr: *const F) -> usize {
    std::mem::align_of::<F>()
}

/// An all-zero value of an output struct with `struct_size` set: the defaults of every output
/// struct (0 = false, 0.0, empty string, and the 0 of each C enum).
///
/// # Safety
///
/// All-zero bytes must be a valid value of `T` (integers, floats, `sda_bool`, `c_char` arrays, and
/// enums with a variant 0).
pub(crate) unsafe fn zeroed_with_size<T>() -> T {
    // SAFETY: the caller promises that all-zero bytes are a valid T.
    let mut value: T = unsafe { std::mem::zeroed() };
    let size = (size_of::<T>() as u32).to_ne_bytes();
    // SAFETY: every growable struct starts with `struct_size: u32` at offset 0 (Growable's contract),
    // so the first four bytes of `value` are that field; `value` is a live local of size_of::<T>() >= 4
    // bytes and nothing else refers to it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            size.as_ptr(),
            (&mut value as *mut T).cast::<u8>(),
            SIZE_FIELD,
        )
    };
    value
}

/// A struct initialised by its C init function (`sda_x_init(ptr, size_of::<T>())`), for Rust callers
/// of the C ABI (the crate's tests): `initialised(sda_guard_options_init)`.
pub fn initialised<T: Growable>(init: extern "C" fn(*mut T, usize) -> crate::status::Status) -> T {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let status = init(value.as_mut_ptr(), size_of::<T>());
    assert_eq!(
        status,
        crate::status::Status::SDA_OK,
        "{}'s init function failed",
        T::NAME
    );
    // SAFETY: the init function succeeded with this library's own size, so it wrote every field of
    // the T: the defaults of an input struct, or an output struct's zeros (valid values, Growable's
    // contract); the padding stays zero.
    unsafe { value.assume_init() }
}

/// Reads a boolean field of a struct a caller wrote.
pub(crate) fn check_bool(value: sda_bool, owner: &str, field: &str) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::invalid_argument(format!(
            "{owner}.{field} is {other}: a boolean field (sda_bool) must be 0 or 1"
        ))),
    }
}

/// Checks a size a caller declared for `T` (see the module's rule); `arg` names the argument.
fn check_size<T: Growable>(size: usize, arg: &str) -> Result<()> {
    let known = size_of::<T>();
    let init = format!(
        "initialise it with {}_init(ptr, sizeof *ptr) or SDA_{}_INIT(ptr)",
        T::NAME,
        T::NAME.trim_start_matches("sda_").to_ascii_uppercase()
    );
    if size < SIZE_FIELD {
        return Err(Error::invalid_argument(format!(
            "{arg}: struct_size of {} is {size}, smaller than the struct_size field itself (this \
             library's {} has {known} bytes): {init}",
            T::NAME,
            T::NAME
        )));
    }
    if size > u32::MAX as usize {
        return Err(Error::invalid_argument(format!(
            "{arg}: a size of {size} bytes for {} does not fit struct_size (uint32_t); this library's \
             has {known} bytes",
            T::NAME
        )));
    }
    if size < known {
        let mut straddled = None;
        T::for_each_field(&mut |name, offset, bytes, _| {
            if straddled.is_none() && offset < size && size < offset + bytes {
                straddled = Some((name, offset, offset + bytes));
            }
        });
        if let Some((field, start, end)) = straddled {
            return Err(Error::invalid_argument(format!(
                "{arg}: struct_size of {} is {size}, which ends inside its field {field} (bytes \
                 {start}..{end}); this library's {} has {known} bytes and accepts an older, smaller \
                 size only when it ends between two fields: {init}",
                T::NAME,
                T::NAME
            )));
        }
    }
    Ok(())
}

/// The `struct_size` a caller's struct declares (read byte-wise: the struct may be less aligned
/// than this library's `T`).
///
/// # Safety
///
/// `ptr` is non-null and points to at least four readable bytes.
unsafe fn declared_size(ptr: *const u8) -> usize {
    let mut bytes = [0u8; SIZE_FIELD];
    // SAFETY: the caller promises four readable bytes at `ptr`; `bytes` is a local of four bytes.
    unsafe { std::ptr::copy_nonoverlapping(ptr, bytes.as_mut_ptr(), SIZE_FIELD) };
    u32::from_ne_bytes(bytes) as usize
}

/// Reads an input struct from the caller (NULL = `None`, the caller's cue for "the defaults"):
/// the fields within its `struct_size` from the caller, the rest from [`Growable::defaults`], then
/// [`Growable::check`].
pub(crate) fn read_input<T: Growable>(ptr: *const T, arg: &str) -> Result<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    let bytes = ptr.cast::<u8>();
    // SAFETY: `ptr` is non-null, and the documentation of every function taking an input struct
    // requires a struct initialised by its sda_*_init, alive during the call: its first four bytes
    // are `struct_size`.
    let size = unsafe { declared_size(bytes) };
    check_size::<T>(size, arg)?;
    let known = size_of::<T>();
    for offset in known..size {
        // SAFETY: the caller declared `size` bytes of struct at `ptr` (struct_size is its own sizeof,
        // set by the init function), so every offset below `size` is readable.
        let byte = unsafe { bytes.add(offset).read() };
        if byte != 0 {
            return Err(Error::invalid_argument(format!(
                "{arg}: {} of {size} bytes has the nonzero byte {byte:#04x} at offset {offset}, past \
                 the {known} bytes this library knows: a field of a newer libsda that this one cannot \
                 honour (leave such fields at 0, or use a newer libsda)",
                T::NAME
            )));
        }
    }
    let mut value = T::defaults();
    // SAFETY: the source holds at least min(size, known) readable bytes (declared by the caller, see
    // above); the destination is the local `value` of `known` bytes; they cannot overlap. Growable's
    // contract makes every bit pattern of the copied bytes a valid T (and check_size made sure that
    // no field is copied in part).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes, (&mut value as *mut T).cast::<u8>(), size.min(known))
    };
    value.check()?;
    Ok(Some(value))
}

/// A caller's output struct whose `struct_size` was checked; [`Out::write`] fills it.
pub(crate) struct Out<T> {
    ptr: *mut T,
    size: usize,
}

impl<T: Growable> Out<T> {
    /// Checks a required output struct (NULL is `SDA_ERR_NULL_POINTER`). Call it before any work, so
    /// that a bad size fails at once.
    pub(crate) fn new(ptr: *mut T, arg: &str) -> Result<Out<T>> {
        Out::optional(ptr, arg)?.ok_or_else(|| Error::null_pointer(format!("{arg} is NULL")))
    }

    /// Checks an optional output struct (NULL = not wanted).
    pub(crate) fn optional(ptr: *mut T, arg: &str) -> Result<Option<Out<T>>> {
        if ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: `ptr` is non-null; the documentation of every function with an output struct
        // requires one initialised by its sda_*_init and writable during the call, so its first
        // four bytes are `struct_size`.
        let size = unsafe { declared_size(ptr.cast::<u8>()) };
        check_size::<T>(size, arg)?;
        Ok(Some(Out { ptr, size }))
    }

    /// Writes `value` into the caller's struct: the fields this library knows that lie within the
    /// caller's `struct_size`; `struct_size` itself and every byte past it are left as they are.
    pub(crate) fn write(&self, value: &T) {
        // SAFETY: `self.ptr` is the caller's struct, declared (struct_size, checked in `new`) to hold
        // `self.size` writable bytes for the duration of the call; the bytes [4, min(size, known))
        // lie inside it and inside `value`, a distinct local or owned value of `known` bytes.
        unsafe { copy_fields(value, self.ptr.cast::<u8>(), self.size) }
    }
}

/// Copies the fields of `value` after `struct_size` that lie wholly within `size` bytes to `dst`,
/// field by field: the padding between fields is never copied (a Rust value's padding bytes are
/// undefined, and libsda hands out none of them).
///
/// # Safety
///
/// `dst` points to at least `size` writable bytes that do not overlap `value`.
unsafe fn copy_fields<T: Growable>(value: &T, dst: *mut u8, size: usize) {
    let end = size.min(size_of::<T>());
    let src = (value as *const T).cast::<u8>();
    T::for_each_field(&mut |_, offset, bytes, _| {
        if offset >= SIZE_FIELD && offset + bytes <= end {
            // SAFETY: the field lies inside `value` (its offset and size, from offset_of! and the
            // field's type) and inside the caller's `size` bytes at `dst` (offset + bytes <= end <=
            // size); the two do not overlap (the caller's promise).
            unsafe { std::ptr::copy_nonoverlapping(src.add(offset), dst.add(offset), bytes) };
        }
    });
}

/// `sda_*_init(ptr, size)`: the defaults of every field that lies within `size`, zero bytes past
/// this library's size, and `struct_size = size`.
pub(crate) fn init<T: Growable>(ptr: *mut T, size: usize, arg: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::null_pointer(format!("{arg} is NULL")));
    }
    check_size::<T>(size, "size")?;
    let dst = ptr.cast::<u8>();
    // SAFETY: the init functions document `ptr` as `size` writable bytes (the caller's sizeof of the
    // struct); every write below stays below `size`, and the defaults are a distinct local.
    unsafe {
        std::ptr::write_bytes(dst, 0, size);
        copy_fields(&T::defaults(), dst, size);
        std::ptr::copy_nonoverlapping((size as u32).to_ne_bytes().as_ptr(), dst, SIZE_FIELD);
    }
    Ok(())
}

/// Copies `items` into a caller's array of `capacity` growable structs, converted by `convert`.
/// `*count` (already checked) always receives the number of items; when the array is too small the
/// call fails with `SDA_ERR_BUFFER_TOO_SMALL` and writes nothing. The stride of the array is the
/// `struct_size` of its first entry (set by the init function); every entry written gets that
/// `struct_size`. `out` may be NULL only when nothing is written.
pub(crate) fn write_array<I, T: Growable>(
    items: &[I],
    out: *mut T,
    capacity: usize,
    count: &mut usize,
    (what, out_name): (&str, &str),
    convert: impl Fn(&I) -> T,
) -> Result<()> {
    *count = items.len();
    if capacity < items.len() {
        return Err(Error::buffer_too_small(format!(
            "{} {what} but room for {capacity} (see *count)",
            items.len()
        )));
    }
    if items.is_empty() {
        return Ok(());
    }
    if out.is_null() {
        return Err(Error::null_pointer(format!(
            "{out_name} is NULL but capacity is {capacity}"
        )));
    }
    let first = out.cast::<u8>();
    // SAFETY: `out` is non-null and the array has capacity >= items.len() >= 1 entries, the first
    // initialised by its init function (documented): its first four bytes are `struct_size`.
    let stride = unsafe { declared_size(first) };
    check_size::<T>(stride, &format!("{out_name}[0]"))?;
    let size = (stride as u32).to_ne_bytes();
    for (i, item) in items.iter().enumerate() {
        // SAFETY: the caller's array holds `capacity` >= items.len() entries of `stride` bytes each
        // (its entries' own sizeof, declared in the first entry), so entry i's `stride` bytes are
        // writable; `convert(item)` is a local value.
        unsafe {
            let dst = first.add(i * stride);
            std::ptr::copy_nonoverlapping(size.as_ptr(), dst, SIZE_FIELD);
            copy_fields(&convert(item), dst, stride);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::align_of;

    /// Checks one growable struct's listing: `struct_size` first, every field listed in order
    /// (gaps only as padding before an aligned field), no tail padding (so that a field appended in
    /// a later version always makes the struct larger).
    fn check_layout<T: Growable>() {
        let mut fields = Vec::new();
        T::for_each_field(&mut |name, offset, size, align| {
            fields.push((name, offset, size, align))
        });
        assert_eq!(fields[0], ("struct_size", 0, 4, 4), "{}", T::NAME);
        let mut end = 0;
        for &(name, offset, size, align) in &fields {
            assert!(
                offset >= end,
                "{}.{name} overlaps the field before",
                T::NAME
            );
            assert!(
                offset - end < align,
                "{}: {} bytes between fields before {name}: a field is not listed",
                T::NAME,
                offset - end
            );
            end = offset + size;
        }
        assert_eq!(
            end,
            size_of::<T>(),
            "{}: the listed fields end at {end} but the struct has {} bytes (a field not listed, or \
             tail padding a later field could move into: make the struct's size a multiple of {})",
            T::NAME,
            size_of::<T>(),
            align_of::<T>()
        );
    }

    // The growth test's build appends a u32 to structs of 8-byte alignment: tail padding on purpose.
    #[cfg(not(feature = "abi-growth-test"))]
    #[test]
    fn every_growable_struct_lists_its_fields_and_has_no_tail_padding() {
        crate::for_each_growable!(check_layout);
    }
}
