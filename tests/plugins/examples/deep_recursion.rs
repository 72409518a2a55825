//! Detector whose `detect` recurses until the WebAssembly stack overflows.
//!
//! Each call keeps a local array alive across the recursive call, so the optimiser can neither
//! turn the recursion into a loop nor drop the frame. The call traps when the engine's stack
//! limit is reached or when the shadow stack in linear memory runs out, whichever comes first.
//! With the default limits of wasmtime 48 the engine's limit comes first.

use core::hint::black_box;

use gridwatch_plugin_sdk::prelude::*;

struct DeepRecursion;

impl Detector for DeepRecursion {
    fn describe() -> Info {
        Info {
            name: "deep-recursion".into(),
            version: "1.0.0".into(),
            description: "Recurses without end on every detect call".into(),
            kinds: vec!["none".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        let depth = recurse(0);
        // Not reached in practice, because the stack overflows long before `recurse` returns.
        black_box(depth);
        Vec::new()
    }
}

export_detector!(DeepRecursion);

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // The base case exists only because rustc warns about a function that cannot return
    // (`unconditional_recursion`). The stack overflows long before `depth` reaches `u64::MAX`,
    // and `black_box` keeps the comparison opaque.
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let mut frame = [depth; 8];
    // The array's address escapes to `black_box` before the call and the array is read after
    // it, so the array must live in this call's frame until the recursive call returns.
    black_box(&mut frame);
    let below = recurse(depth + 1);
    black_box(&frame)[(below % 8) as usize] ^ below
}
