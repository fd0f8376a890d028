//! Decoding an image folder: the 60,000 CIFAR-10 images written as 32×32 PNGs
//! (`train/<class>/*.png`, 50,000; `test/<class>/*.png`, 10,000) into
//! `target/cifar10-png/` once, then loaded by `trainer::data::load` with a
//! cold cache (the cache file removed: every PNG decoded) and a warm one
//! (the cache file read back), several times each; prints the median and
//! every time. Checks that the folder gives the binary reader's pixels.
//!
//! `cargo bench --bench folder_decode [-- --rounds N]` (needs the CIFAR-10
//! binary files in `$CIFAR10_DIR` or `../shared/cifar10/cifar-10-batches-bin`).

use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Instant;
use trainer::data::{cifar10, LoadOptions};

fn cifar_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CIFAR10_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("../shared/cifar10/cifar-10-batches-bin")])
        .find(|d| cifar10::is_present(d))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map_or(3, |n| n.parse().expect("--rounds N"));
    let Some(dir) = cifar_dir() else {
        println!("SKIPPED folder_decode: CIFAR-10 not found (set CIFAR10_DIR)");
        return;
    };
    let data = cifar10::load(&dir).expect("CIFAR-10");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cifar10-png");
    let marker = root.join(".complete");
    if !marker.exists() {
        let t = Instant::now();
        for (split, name) in [(&data.train, "train"), (&data.test, "test")] {
            for class in &data.class_names {
                std::fs::create_dir_all(root.join(name).join(class)).unwrap();
            }
            for i in 0..split.len() {
                let class = &data.class_names[split.labels[i] as usize];
                let img = RgbImage::from_raw(32, 32, split.image(i).to_vec()).unwrap();
                img.save(root.join(name).join(class).join(format!("{i:05}.png")))
                    .unwrap();
            }
        }
        std::fs::write(&marker, b"").unwrap();
        println!("wrote 60,000 PNGs in {:.1} s", t.elapsed().as_secs_f64());
    }
    let opts = LoadOptions::new(cifar10::SHAPE);
    let cache = trainer::data::folder::cache_path(&root, cifar10::SHAPE);
    let load = || {
        let t = Instant::now();
        let (d, report) = trainer::data::load(&root, &opts, &|_, _| {}).expect("folder");
        (t.elapsed().as_secs_f64(), d, report.expect("a folder"))
    };
    println!("threads: {}", rayon::current_num_threads());
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let _ = std::fs::remove_file(&cache);
        let (s, d, r) = load();
        assert!(!r.from_cache);
        assert_eq!((d.train.len(), d.test.len()), (50_000, 10_000));
        cold.push(s);
        let (s, d2, r) = load();
        assert!(r.from_cache);
        assert_eq!(d2.train.images, d.train.images);
        warm.push(s);
    }
    // Same pixels and labels as the binary reader, image by image (the
    // folder orders images by class, then by file name).
    let (_, d, _) = load();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 10];
    for (i, &l) in data.test.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let order: Vec<usize> = by_class.concat();
    let same = order.iter().enumerate().all(|(j, &i)| {
        d.test.image(j) == data.test.image(i) && d.test.labels[j] == data.test.labels[i]
    });
    assert!(
        same,
        "the folder's test images differ from the binary reader's"
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "cold (decode 60,000 PNGs + write cache): median {:.2} s [{}]",
        median(cold.clone()),
        fmt(&cold)
    );
    println!(
        "warm (read the cache): median {:.2} s [{}]",
        median(warm.clone()),
        fmt(&warm)
    );
    println!("test images identical to the binary reader's: {same}");
}
