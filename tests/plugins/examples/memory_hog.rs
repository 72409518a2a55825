//! Detector whose `detect` allocates memory until the host's memory limit stops it.

use core::hint::black_box;

use gridwatch_plugin_sdk::prelude::*;

/// Size of each allocation, 1 MiB.
const BLOCK_BYTES: usize = 1 << 20;

struct MemoryHog;

impl Detector for MemoryHog {
    fn describe() -> Info {
        Info {
            name: "memory-hog".into(),
            version: "1.0.0".into(),
            description: "Allocates 1 MiB blocks without end on every detect call".into(),
            kinds: vec!["none".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Reserving a block grows linear memory without the fuel cost of writing it, and
            // keeping each block in `blocks` stops the allocator from reusing it. Once linear
            // memory cannot grow, the failed allocation aborts the call with a trap.
            let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES);
            block.push(0xA5);
            blocks.push(black_box(block));
        }
    }
}

export_detector!(MemoryHog);
