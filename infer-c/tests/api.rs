//! Every function of the C API, called as C would, with good and bad
//! arguments: NULL pointers, unopened and closed handles, misaligned and
//! overlapping buffers, wrong sizes, lengths past the address space, corrupt
//! model files. Each must return its status code (or 0), never panic: a panic
//! inside an `extern "C"` function aborts this test process.

use infer_c::*;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::{null, null_mut};

fn model1() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/model1.safetensors");
    std::fs::read(path).expect("read models/model1.safetensors")
}

/// Storage for a handle: `u64`s, so 8-aligned, which is enough (checked).
fn storage() -> Vec<u64> {
    assert!(infer_model_align() <= 8);
    vec![0u64; infer_model_size().div_ceil(8) + 1]
}

/// Opens `bytes` in `store`; the status, the handle and the detail text.
fn open(bytes: &[u8], store: &mut [u64]) -> (c_int, *mut InferModel, String) {
    let mut model = null_mut();
    let mut detail = [0 as c_char; 200];
    let status = unsafe {
        infer_model_open(
            bytes.as_ptr(),
            bytes.len(),
            store.as_mut_ptr().cast(),
            std::mem::size_of_val(store),
            &mut model,
            detail.as_mut_ptr(),
            detail.len(),
        )
    };
    let detail = unsafe { CStr::from_ptr(detail.as_ptr()) };
    (status, model, detail.to_str().unwrap().to_string())
}

fn message(code: c_int) -> String {
    unsafe { CStr::from_ptr(infer_error_message(code)) }
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn error_messages_are_distinct_static_strings() {
    let codes = [
        INFER_OK,
        INFER_ERR_NULL_ARGUMENT,
        INFER_ERR_BAD_HANDLE,
        INFER_ERR_STORAGE_TOO_SMALL,
        INFER_ERR_MISALIGNED,
        INFER_ERR_OVERLAP,
        INFER_ERR_TOO_LARGE,
        INFER_ERR_INVALID_MODEL,
        INFER_ERR_IMAGE_SIZE,
        INFER_ERR_SCRATCH_TOO_SMALL,
        INFER_ERR_PROBS_TOO_SMALL,
        INFER_ERR_CLASS_INDEX,
        INFER_ERR_NO_CLASS_NAMES,
        INFER_ERR_BUFFER_TOO_SMALL,
        INFER_ERR_BAD_BACKEND,
        INFER_ERR_INTERNAL,
    ];
    let texts: std::collections::BTreeSet<String> = codes.iter().map(|&c| message(c)).collect();
    assert_eq!(texts.len(), codes.len());
    assert_eq!(message(-1), "unknown status code");
    assert_eq!(message(c_int::MAX), "unknown status code");
    assert_eq!(message(c_int::MIN), "unknown status code");
}

#[test]
fn open_good_and_bad() {
    let bytes = model1();
    let mut store = storage();
    let (status, model, detail) = open(&bytes, &mut store);
    assert_eq!(status, INFER_OK, "{detail}");
    assert_eq!(model.cast::<u64>(), store.as_mut_ptr());
    assert_eq!(detail, "");

    let size = infer_model_size();
    let mut out = null_mut();
    let mut detail = [1 as c_char; 64];
    let p = store.as_mut_ptr().cast::<c_void>();
    let call = |bytes: *const u8, len, storage, storage_len, out, detail, detail_len| unsafe {
        infer_model_open(bytes, len, storage, storage_len, out, detail, detail_len)
    };
    let d = detail.as_mut_ptr();
    let b = bytes.as_ptr();
    let n = bytes.len();
    // NULL arguments.
    assert_eq!(
        call(b, n, p, size, null_mut(), d, 64),
        INFER_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        call(null(), n, p, size, &mut out, d, 64),
        INFER_ERR_NULL_ARGUMENT
    );
    assert!(out.is_null());
    assert_eq!(
        unsafe { CStr::from_ptr(d) }.to_str().unwrap(),
        "a required pointer argument is NULL"
    );
    assert_eq!(
        call(b, n, null_mut(), size, &mut out, d, 64),
        INFER_ERR_NULL_ARGUMENT
    );
    // NULL or empty detail is fine.
    assert_eq!(call(b, n, p, size, &mut out, null_mut(), 64), INFER_OK);
    assert_eq!(call(b, n, p, size, &mut out, d, 0), INFER_OK);
    // Storage too small, misaligned.
    assert_eq!(
        call(b, n, p, size - 1, &mut out, d, 64),
        INFER_ERR_STORAGE_TOO_SMALL
    );
    assert!(out.is_null());
    let odd = unsafe { p.cast::<u8>().add(1) }.cast::<c_void>();
    assert_eq!(call(b, n, odd, size, &mut out, d, 64), INFER_ERR_MISALIGNED);
    // Lengths past the address space.
    assert_eq!(
        call(b, usize::MAX, p, size, &mut out, d, 64),
        INFER_ERR_TOO_LARGE
    );
    assert_eq!(
        call(b, n, p, usize::MAX, &mut out, d, 64),
        INFER_ERR_TOO_LARGE
    );
    assert_eq!(
        call(b, n, p, size, &mut out, d, usize::MAX),
        INFER_ERR_TOO_LARGE
    );
    // Storage inside the model's bytes; detail inside the storage or the bytes.
    let mut copy = vec![0u64; bytes.len() / 8 + 1];
    let cb = copy.as_mut_ptr().cast::<u8>();
    unsafe { std::ptr::copy_nonoverlapping(b, cb, n) };
    assert_eq!(
        call(cb, n, cb.cast(), size, &mut out, d, 64),
        INFER_ERR_OVERLAP
    );
    assert_eq!(
        call(b, n, p, size, &mut out, p.cast(), 64),
        INFER_ERR_OVERLAP
    );
    assert_eq!(
        call(cb, n, p, size, &mut out, cb.cast(), 64),
        INFER_ERR_OVERLAP
    );
    // The out pointer inside the storage, the bytes or the detail buffer.
    let out_in = |p: *mut c_void| p.cast::<*mut InferModel>();
    assert_eq!(call(b, n, p, size, out_in(p), d, 64), INFER_ERR_OVERLAP);
    assert_eq!(
        call(cb, n, p, size, out_in(cb.cast()), d, 64),
        INFER_ERR_OVERLAP
    );
    assert_eq!(
        call(b, n, p, size, out_in(d.cast()), d, 64),
        INFER_ERR_OVERLAP
    );
    // The bytes were not written: still a valid model.
    assert_eq!(call(cb, n, p, size, &mut out, d, 64), INFER_OK);
    // Not a model: the detail says why, cut to fit.
    assert_eq!(
        call(b, 5, p, size, &mut out, d, 64),
        INFER_ERR_INVALID_MODEL
    );
    assert!(out.is_null());
    let text = unsafe { CStr::from_ptr(d) }.to_str().unwrap();
    assert!(text.starts_with("not a complete model file"), "{text}");
    assert_eq!(text.len(), 63);
    assert_eq!(call(b, 0, p, size, &mut out, d, 1), INFER_ERR_INVALID_MODEL);
    assert_eq!(detail[0], 0);
    // A failed open leaves no open handle behind.
    assert_eq!(unsafe { infer_num_classes(p.cast()) }, 0);
}

#[test]
fn corrupt_files_are_refused_without_panicking() {
    let bytes = model1();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut store = storage();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut refused = 0;
    for round in 0..300 {
        let mut b = bytes.clone();
        match round % 3 {
            // A byte of the header changed.
            0 => {
                let i = next() as usize % header;
                b[i] = next() as u8;
            }
            // Cut anywhere.
            1 => b.truncate(next() as usize % bytes.len()),
            // A printable byte in the header replaced by a JSON-significant one.
            _ => {
                let i = 8 + next() as usize % (header - 8);
                b[i] = b"{}[]\":,0-e\\"[next() as usize % 11];
            }
        }
        let (status, model, detail) = open(&b, &mut store);
        match status {
            INFER_OK => assert!(!model.is_null()),
            INFER_ERR_INVALID_MODEL => {
                assert!(model.is_null());
                assert!(!detail.is_empty());
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 150, "{refused}");
}

#[test]
fn queries_and_class_names() {
    let bytes = model1();
    let mut store = storage();
    let (status, model, _) = open(&bytes, &mut store);
    assert_eq!(status, INFER_OK);
    let rust = infer::Model::from_bytes(&bytes).unwrap();
    let (h, w, c) = rust.input_shape();
    unsafe {
        assert_eq!(infer_input_height(model), h);
        assert_eq!(infer_input_width(model), w);
        assert_eq!(infer_input_channels(model), c);
        assert_eq!(infer_input_bytes(model), h * w * c);
        assert_eq!(infer_num_classes(model), 10);
        assert_eq!(infer_scratch_len(model), rust.scratch_len());
        assert_eq!(infer_scratch_bytes(model), rust.scratch_bytes());
    }
    // NULL and unopened handles: 0.
    let mut blank = storage();
    let blank = blank.as_mut_ptr().cast::<InferModel>();
    let misaligned = unsafe { model.cast::<u8>().add(4) }.cast::<InferModel>();
    for m in [null(), blank.cast_const(), misaligned.cast_const()] {
        unsafe {
            assert_eq!(infer_input_height(m), 0);
            assert_eq!(infer_input_width(m), 0);
            assert_eq!(infer_input_channels(m), 0);
            assert_eq!(infer_input_bytes(m), 0);
            assert_eq!(infer_num_classes(m), 0);
            assert_eq!(infer_scratch_len(m), 0);
            assert_eq!(infer_scratch_bytes(m), 0);
        }
    }

    // Names by pointer and length.
    let mut name = null();
    let mut len = 0usize;
    for i in 0..10 {
        assert_eq!(
            unsafe { infer_class_name(model, i, &mut name, &mut len) },
            INFER_OK
        );
        let s = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
        assert_eq!(std::str::from_utf8(s).unwrap(), rust.class_name(i).unwrap());
    }
    unsafe {
        assert_eq!(
            infer_class_name(model, 10, &mut name, &mut len),
            INFER_ERR_CLASS_INDEX
        );
        assert_eq!(
            infer_class_name(model, usize::MAX, &mut name, &mut len),
            INFER_ERR_CLASS_INDEX
        );
        assert_eq!(
            infer_class_name(model, 0, null_mut(), &mut len),
            INFER_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            infer_class_name(model, 0, &mut name, null_mut()),
            INFER_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            infer_class_name(null(), 0, &mut name, &mut len),
            INFER_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            infer_class_name(blank, 0, &mut name, &mut len),
            INFER_ERR_BAD_HANDLE
        );
        assert_eq!(
            infer_class_name(misaligned, 0, &mut name, &mut len),
            INFER_ERR_BAD_HANDLE
        );
        // Outputs inside the handle: refused, the handle intact.
        let inside = model.cast::<*const c_char>();
        assert_eq!(
            infer_class_name(model, 0, inside, &mut len),
            INFER_ERR_OVERLAP
        );
        let inside = model.cast::<u8>().add(16).cast::<usize>();
        assert_eq!(
            infer_class_name(model, 0, &mut name, inside),
            INFER_ERR_OVERLAP
        );
        assert_eq!(infer_num_classes(model), 10);
    }

    // Names copied as C strings.
    let copy = |m: *const InferModel, i: usize, buf: *mut c_char, n: usize| unsafe {
        infer_class_name_copy(m, i, buf, n)
    };
    let mut buf = [7 as c_char; 16];
    let b = buf.as_mut_ptr();
    assert_eq!(copy(model, 1, b, 16), INFER_OK);
    assert_eq!(unsafe { CStr::from_ptr(b) }.to_str().unwrap(), "automobile");
    assert_eq!(copy(model, 1, b, 11), INFER_OK);
    assert_eq!(copy(model, 1, b, 10), INFER_ERR_BUFFER_TOO_SMALL);
    assert_eq!(unsafe { CStr::from_ptr(b) }.to_str().unwrap(), "automobil");
    assert_eq!(copy(model, 1, b, 1), INFER_ERR_BUFFER_TOO_SMALL);
    assert_eq!(buf[0], 0);
    assert_eq!(copy(model, 1, b, 0), INFER_ERR_BUFFER_TOO_SMALL);
    assert_eq!(copy(model, 10, b, 16), INFER_ERR_CLASS_INDEX);
    assert_eq!(buf[0], 0, "an empty string on error");
    assert_eq!(copy(model, 1, null_mut(), 16), INFER_ERR_NULL_ARGUMENT);
    assert_eq!(copy(model, 1, b, usize::MAX), INFER_ERR_TOO_LARGE);
    assert_eq!(copy(null(), 1, b, 16), INFER_ERR_NULL_ARGUMENT);
    assert_eq!(copy(blank, 1, b, 16), INFER_ERR_BAD_HANDLE);
    // Into the handle or the model's bytes: refused.
    assert_eq!(copy(model, 1, model.cast(), 16), INFER_ERR_OVERLAP);
    let inside = unsafe { bytes.as_ptr().add(100) }.cast_mut().cast();
    assert_eq!(copy(model, 1, inside, 16), INFER_ERR_OVERLAP);
}

/// Winograd on: a larger scratch, the probabilities within float rounding
/// of the direct ones; off again: the first scratch size.
#[test]
fn winograd() {
    let bytes = model1();
    let mut store = storage();
    let (_, model, _) = open(&bytes, &mut store);
    let image: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let classify = |probs: &mut [f32; 10]| unsafe {
        let len = infer_scratch_len(model);
        let mut scratch = vec![0f32; len];
        let (mut class, mut prob) = (0usize, 0f32);
        let status = infer_classify(
            model,
            image.as_ptr(),
            image.len(),
            scratch.as_mut_ptr(),
            len,
            probs.as_mut_ptr(),
            10,
            &mut class,
            &mut prob,
        );
        assert_eq!(status, INFER_OK);
        len
    };
    let (mut direct, mut winograd) = ([0f32; 10], [0f32; 10]);
    let small = classify(&mut direct);
    unsafe {
        assert_eq!(infer_set_winograd(model, 1), INFER_OK);
        assert!(infer_scratch_len(model) > small);
    }
    classify(&mut winograd);
    for (a, b) in direct.iter().zip(&winograd) {
        assert!((a - b).abs() <= 1e-5, "{direct:?} vs {winograd:?}");
    }
    unsafe {
        assert_eq!(infer_set_winograd(model, 0), INFER_OK);
        assert_eq!(infer_scratch_len(model), small);
        assert_eq!(infer_set_winograd(null_mut(), 1), INFER_ERR_NULL_ARGUMENT);
    }
}

#[test]
fn backends_and_close() {
    let bytes = model1();
    let mut store = storage();
    let (_, model, _) = open(&bytes, &mut store);
    unsafe {
        for b in [
            INFER_BACKEND_PORTABLE,
            INFER_BACKEND_AVX2,
            INFER_BACKEND_AVX512,
            INFER_BACKEND_AUTO,
        ] {
            assert_eq!(infer_set_backend(model, b), INFER_OK);
        }
        assert_eq!(infer_set_backend(model, 4), INFER_ERR_BAD_BACKEND);
        assert_eq!(infer_set_backend(model, -1), INFER_ERR_BAD_BACKEND);
        assert_eq!(infer_set_backend(null_mut(), 0), INFER_ERR_NULL_ARGUMENT);
        assert_eq!(infer_num_classes(model), 10);

        assert_eq!(infer_model_close(null_mut()), INFER_ERR_NULL_ARGUMENT);
        assert_eq!(infer_model_close(model), INFER_OK);
        assert_eq!(infer_model_close(model), INFER_ERR_BAD_HANDLE);
        assert_eq!(infer_set_backend(model, 0), INFER_ERR_BAD_HANDLE);
        assert_eq!(infer_num_classes(model), 0);
        let (mut name, mut len) = (null(), 0);
        assert_eq!(
            infer_class_name(model, 0, &mut name, &mut len),
            INFER_ERR_BAD_HANDLE
        );
    }
}

#[test]
fn classify_good_and_bad() {
    let bytes = model1();
    let mut store = storage();
    let (_, model, _) = open(&bytes, &mut store);
    let rust = infer::Model::from_bytes(&bytes).unwrap();
    let image: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut scratch = vec![0f32; rust.scratch_len() + 1];
    let mut probs = [0f32; 11];
    let mut want = [0f32; 10];
    let top = rust
        .classify(&image, &mut vec![0f32; rust.scratch_len()], &mut want)
        .unwrap();

    let (i, n) = (image.as_ptr(), image.len());
    let sl = rust.scratch_len();
    let s = scratch.as_mut_ptr();
    let p = probs.as_mut_ptr();
    let mut class = usize::MAX;
    let mut prob = -1f32;
    let run = |m: *const InferModel, i, n, s, sl, p, pl, c: *mut usize, q: *mut f32| unsafe {
        infer_classify(m, i, n, s, sl, p, pl, c, q)
    };
    assert_eq!(
        run(model, i, n, s, sl, p, 10, &mut class, &mut prob),
        INFER_OK
    );
    assert_eq!((class, prob), (top.class, top.probability));
    assert_eq!(probs[..10], want);
    // Outputs are optional; larger buffers are fine.
    assert_eq!(
        run(model, i, n, s, sl + 1, p, 11, null_mut(), null_mut()),
        INFER_OK
    );

    // Handles.
    let mut blank = storage();
    let blank = blank.as_mut_ptr().cast::<InferModel>();
    assert_eq!(
        run(null(), i, n, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        run(blank, i, n, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_BAD_HANDLE
    );
    // NULL buffers.
    assert_eq!(
        run(model, null(), n, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        run(model, i, n, null_mut(), sl, p, 10, &mut class, &mut prob),
        INFER_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        run(model, i, n, s, sl, null_mut(), 10, &mut class, &mut prob),
        INFER_ERR_NULL_ARGUMENT
    );
    // Sizes.
    assert_eq!(
        run(model, i, n - 1, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_IMAGE_SIZE
    );
    assert_eq!(
        run(model, i, 0, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_IMAGE_SIZE
    );
    assert_eq!(
        run(model, i, n, s, sl - 1, p, 10, &mut class, &mut prob),
        INFER_ERR_SCRATCH_TOO_SMALL
    );
    assert_eq!(
        run(model, i, n, s, 0, p, 10, &mut class, &mut prob),
        INFER_ERR_SCRATCH_TOO_SMALL
    );
    assert_eq!(
        run(model, i, n, s, sl, p, 9, &mut class, &mut prob),
        INFER_ERR_PROBS_TOO_SMALL
    );
    assert_eq!(
        run(model, i, n, s, sl, p, 0, &mut class, &mut prob),
        INFER_ERR_PROBS_TOO_SMALL
    );
    assert_eq!(
        run(model, i, usize::MAX, s, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_TOO_LARGE
    );
    assert_eq!(
        run(model, i, n, s, usize::MAX / 2, p, 10, &mut class, &mut prob),
        INFER_ERR_TOO_LARGE
    );
    assert_eq!(
        run(
            model,
            i,
            n,
            s,
            sl,
            p,
            usize::MAX / 4 + 1,
            &mut class,
            &mut prob
        ),
        INFER_ERR_TOO_LARGE
    );
    // Misaligned float buffers.
    let s1 = unsafe { s.cast::<u8>().add(1) }.cast::<f32>();
    let p1 = unsafe { p.cast::<u8>().add(1) }.cast::<f32>();
    assert_eq!(
        run(model, i, n, s1, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_MISALIGNED
    );
    assert_eq!(
        run(model, i, n, s, sl, p1, 10, &mut class, &mut prob),
        INFER_ERR_MISALIGNED
    );
    // Overlaps: scratch and probabilities, each with the image, the model's
    // bytes or the handle.
    let s10 = unsafe { s.add(sl - 5) };
    assert_eq!(
        run(model, i, n, s, sl, s10, 10, &mut class, &mut prob),
        INFER_ERR_OVERLAP
    );
    let img_in_scratch = s.cast::<u8>().cast_const();
    let mut img = [0u8; 32 * 32 * 3];
    assert_eq!(
        run(
            model,
            img_in_scratch,
            n,
            s,
            sl,
            p,
            10,
            &mut class,
            &mut prob
        ),
        INFER_ERR_OVERLAP
    );
    let p_over_img = img.as_mut_ptr().cast::<f32>();
    let img_p = img.as_ptr();
    if p_over_img.is_aligned() {
        assert_eq!(
            run(model, img_p, n, s, sl, p_over_img, 10, &mut class, &mut prob),
            INFER_ERR_OVERLAP
        );
    }
    let in_model = store.as_mut_ptr().cast::<f32>();
    assert_eq!(
        run(model, i, n, in_model, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_OVERLAP
    );
    assert_eq!(
        run(model, i, n, s, sl, in_model, 10, &mut class, &mut prob),
        INFER_ERR_OVERLAP
    );
    let mut copy = vec![0u64; bytes.len() / 8 + 1];
    let cb = copy.as_mut_ptr().cast::<u8>();
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), cb, bytes.len()) };
    let mut store2 = storage();
    let mut m2 = null_mut();
    let st = unsafe {
        infer_model_open(
            cb,
            bytes.len(),
            store2.as_mut_ptr().cast(),
            infer_model_size(),
            &mut m2,
            null_mut(),
            0,
        )
    };
    assert_eq!(st, INFER_OK);
    let in_bytes = unsafe { cb.add(bytes.len() - 64) }.cast::<f32>();
    assert_eq!(
        run(m2, i, n, s, sl, in_bytes, 10, &mut class, &mut prob),
        INFER_ERR_OVERLAP
    );
    assert_eq!(
        run(m2, i, n, in_bytes, sl, p, 10, &mut class, &mut prob),
        INFER_ERR_OVERLAP
    );
    // Outputs inside the handle or the model's bytes.
    let class_in = store.as_mut_ptr().cast::<usize>();
    assert_eq!(
        run(model, i, n, s, sl, p, 10, class_in, &mut prob),
        INFER_ERR_OVERLAP
    );
    let prob_in = unsafe { store.as_mut_ptr().add(3) }.cast::<f32>();
    assert_eq!(
        run(model, i, n, s, sl, p, 10, &mut class, prob_in),
        INFER_ERR_OVERLAP
    );
    let prob_in = unsafe { cb.add(100) }.cast::<f32>();
    assert_eq!(
        run(m2, i, n, s, sl, p, 10, &mut class, prob_in),
        INFER_ERR_OVERLAP
    );
    // The image may lie in the model's bytes (both are read-only).
    assert_eq!(
        run(m2, cb, n, s, sl, p, 10, &mut class, &mut prob),
        INFER_OK
    );
    // After all that, the same answer as at first.
    assert_eq!(
        run(model, i, n, s, sl, p, 10, &mut class, &mut prob),
        INFER_OK
    );
    assert_eq!((class, prob), (top.class, top.probability));
    let _ = img;
}
