//! Which mappings the tracer follows (`--regions`): the one choice the membership predicate
//! of the programs (`regions::followed`) answers for, set in `Config::flags` at load.

use std::{fmt, str::FromStr};

/// What a followed process's regions are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Regions {
    /// Mappings made by syscall 554 (or its documented mmap fallback).
    #[default]
    Tamalloc,
    /// Those, and every private anonymous mapping: `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` and
    /// the heap (`brk`).
    Anon,
}

impl Regions {
    /// `tamalloc` or `anon`, as the header and the `meta` record say it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tamalloc => "tamalloc",
            Self::Anon => "anon",
        }
    }
}

impl fmt::Display for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Regions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tamalloc" => Ok(Self::Tamalloc),
            "anon" => Ok(Self::Anon),
            _ if s.starts_with("name:") => Err(
                "name:NAME is not supported yet: follow `tamalloc` regions or every `anon` \
                 mapping"
                    .into(),
            ),
            _ => Err(format!("'{s}' is not one of tamalloc, anon")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_names() {
        assert_eq!("tamalloc".parse(), Ok(Regions::Tamalloc));
        assert_eq!("anon".parse(), Ok(Regions::Anon));
        assert!("heap".parse::<Regions>().is_err());
        assert_eq!(Regions::Anon.to_string(), "anon");
    }
}
