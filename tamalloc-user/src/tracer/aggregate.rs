//! Per-process state built from decoded events and counter snapshots.
