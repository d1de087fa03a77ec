//! The generated site in headless Chromium.
