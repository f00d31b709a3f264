//! Compile-time ties between the object's maps and programs and their names in
//! `tamalloc_common::maps`, which userspace loads them by. aya names a map after its static
//! and a program after its function, so each tie names the item and its const: renaming one
//! without the other fails the build here (and a host test in tamalloc-user checks that the
//! object holds exactly `ALL_MAPS` and `ALL_PROGRAMS`, so a tie left out is caught too).

/// `named_map!(CHUNKS)` beside `#[map] static CHUNKS`: the static exists and
/// `tamalloc_common::maps::CHUNKS` spells its name.
macro_rules! named_map {
    ($map:ident) => {
        const _: () = {
            let _ = &raw const $map;
            assert!(
                tamalloc_common::maps::same(stringify!($map), tamalloc_common::maps::$map),
                concat!(
                    "tamalloc_common::maps::",
                    stringify!($map),
                    " is not \"",
                    stringify!($map),
                    "\""
                )
            );
        };
    };
}

/// `named_program!(sys_enter = SYS_ENTER)` beside `fn sys_enter`: the function exists and
/// `tamalloc_common::maps::prog::SYS_ENTER` spells its name.
macro_rules! named_program {
    ($program:ident = $name:ident) => {
        const _: () = {
            let _ = $program;
            assert!(
                tamalloc_common::maps::same(
                    stringify!($program),
                    tamalloc_common::maps::prog::$name
                ),
                concat!(
                    "tamalloc_common::maps::prog::",
                    stringify!($name),
                    " is not \"",
                    stringify!($program),
                    "\""
                )
            );
        };
    };
}
