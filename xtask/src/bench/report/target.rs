//! A target the report judges: what it is, the measured figure, and what limits it.

pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
    /// What limits it, shown when it is missed.
    pub limit: String,
}

pub fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}
