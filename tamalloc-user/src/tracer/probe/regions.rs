//! Which mappings the tracer follows (`--regions`): the one choice the membership predicate
//! of the programs (`regions::followed`) answers for, set in `Config::flags` at load.

use std::{fmt, str::FromStr};

use tamalloc_common::maps::ANON_NAME_MAX;

/// What a followed process's regions are. Every choice follows syscall 554's regions (and
/// its documented fallback's); the others add to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Regions {
    /// Only syscall 554's regions.
    #[default]
    Tamalloc,
    /// Every private anonymous mapping too: `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` and the
    /// heap (`brk`).
    Anon,
    /// Anonymous ranges named `[anon:NAME]` with `prctl(PR_SET_VMA_ANON_NAME)` too (kernels
    /// with CONFIG_ANON_VMA_NAME).
    Named(String),
}

impl fmt::Display for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tamalloc => f.write_str("tamalloc"),
            Self::Anon => f.write_str("anon"),
            Self::Named(n) => write!(f, "name:{n}"),
        }
    }
}

impl FromStr for Regions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tamalloc" => Ok(Self::Tamalloc),
            "anon" => Ok(Self::Anon),
            _ => match s.strip_prefix("name:") {
                Some(name) => check_name(name).map(|()| Self::Named(name.to_owned())),
                None => Err(format!("'{s}' is not one of tamalloc, anon, name:NAME")),
            },
        }
    }
}

/// The kernel's rules for an anonymous mapping's name (`prctl(PR_SET_VMA_ANON_NAME)`):
/// 1 to 79 printable bytes, none of `\`, `` ` ``, `$`, `[`, `]`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= ANON_NAME_MAX {
        return Err(format!(
            "a mapping name has 1 to {} bytes",
            ANON_NAME_MAX - 1
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(' '..='~').contains(&c) || "\\`$[]".contains(c))
    {
        return Err(format!("the kernel does not allow {c:?} in a mapping name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_names() {
        assert_eq!("tamalloc".parse(), Ok(Regions::Tamalloc));
        assert_eq!("anon".parse(), Ok(Regions::Anon));
        assert_eq!("name:arena".parse(), Ok(Regions::Named("arena".into())));
        assert_eq!(
            Regions::Named("jit code".into()).to_string(),
            "name:jit code"
        );
        assert!("heap".parse::<Regions>().is_err());
        assert!("name:".parse::<Regions>().is_err());
        assert!("name:a[1]".parse::<Regions>().is_err());
        assert!(
            format!("name:{}", "x".repeat(80))
                .parse::<Regions>()
                .is_err()
        );
        assert!(
            format!("name:{}", "x".repeat(79))
                .parse::<Regions>()
                .is_ok()
        );
    }
}
