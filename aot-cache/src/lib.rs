//! Hot-contract cache. Placeholder: lands with the aot-cache issue.
