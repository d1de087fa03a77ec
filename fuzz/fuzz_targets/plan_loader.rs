//! The plan loader on any text: it must return a plan or a `PlanError`, never panic, and every
//! problem it reports must have a place or say why the file could not be read at all.
//!
//! `cargo fuzz run plan_loader fuzz/seeds -- -dict=fuzz/plan.dict` (see docs/benchmarks.md).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory with no scripts or files in it: `script:` and `files:` are looked up for real.
    let path = Path::new("/nonexistent-qa-fuzz/plan.yaml");
    match qa_core::plan::load_str(text, path) {
        Ok(loaded) => {
            // What the engine does first with a plan must hold for any plan that loads.
            let backends = qa_core::BackendRegistry::new();
            let _ = qa_core::stages::build_graph(&loaded, &backends);
            for s in &loaded.plan.steps {
                let name = qa_core::engine::file_name_of(&s.name);
                assert!(!name.is_empty() && !name.contains('/') && !name.starts_with('.'));
            }
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            let _ = e.to_string();
        }
    }
});
