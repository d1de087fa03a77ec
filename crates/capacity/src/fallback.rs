//! Zone fallback.
