//! A noisy neighbour for the durability figures: a writer that keeps up
//! to a GiB of dirty pages in the page cache, which a syncfs must write
//! out first.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A neighbour appending about 100 MB/s to a log it starts afresh every
/// GiB (the old one is deleted, so the disk does not fill), until dropped:
/// up to a GiB of dirty pages that a syncfs must write out first.
pub struct Neighbour {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Neighbour {
    pub fn start(dir: &Path) -> Neighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let path = dir.join("neighbour.log");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut f = File::create(&path).unwrap();
            let chunk = vec![b'n'; 1 << 20];
            let started = Instant::now();
            let mut written: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                if written > 0 && written.is_multiple_of(1 << 30) {
                    f = File::create(&path).unwrap();
                }
                f.write_all(&chunk).unwrap();
                written += chunk.len() as u64;
                // Pace to about 100 MB/s.
                let due = Duration::from_secs_f64(written as f64 / 100e6);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            drop(f);
            let _ = fs::remove_file(&path);
        });
        Neighbour {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
