//! Each way a file can be wrong gets its own, precise error; and the small API
//! facts (sizes, class names) hold.

mod common;

use common::{json_string, model1, raw_file, Entry, SafeTensors, Shape, TestModel, L};
use infer::{AddProblem, Error, Model, Param, TensorProblem};

fn small() -> TestModel {
    TestModel::random(
        Shape { h: 4, w: 4, c: 1 },
        vec![
            L::Conv {
                filters: 2,
                k: 3,
                stride: 1,
                same: true,
            },
            L::Bn { eps: 1e-3 },
            L::Flatten,
            L::Dense { units: 3 },
        ],
        0,
    )
}

fn load(st: &SafeTensors) -> Result<(), Error> {
    Model::from_bytes(&st.to_bytes()).map(|_| ())
}

fn tensor_err(layer: usize, param: Param, problem: TensorProblem) -> Result<(), Error> {
    Err(Error::Tensor {
        layer,
        param,
        problem,
    })
}

fn entry<'a>(st: &'a mut SafeTensors, name: &str) -> &'a mut Entry {
    st.tensors.iter_mut().find(|t| t.name == name).unwrap()
}

#[test]
fn valid_in_any_order() {
    let mut st = small().safetensors();
    assert_eq!(load(&st), Ok(()));
    st.metadata_last = true;
    st.tensors.reverse();
    assert_eq!(load(&st), Ok(()));
}

#[test]
fn truncated_files() {
    let bytes = small().to_bytes();
    for n in [0, 1, 7, 8, 9, 100] {
        assert!(Model::from_bytes(&bytes[..n]).is_err(), "{n}");
    }
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Model::from_bytes(&huge).err(), Some(Error::Truncated));
    assert_eq!(Model::from_bytes(&bytes[..5]).err(), Some(Error::Truncated));
    // Cut in the tensor data: the last tensor's offsets point past the end.
    assert_eq!(
        Model::from_bytes(&bytes[..bytes.len() - 1]).err(),
        Some(Error::Tensor {
            layer: 3,
            param: Param::Bias,
            problem: TensorProblem::Offsets
        })
    );
}

#[test]
fn tensor_problems() {
    let base = small().safetensors();

    let mut st = base.clone();
    st.tensors.retain(|t| t.name != "bn1.moving_variance");
    assert_eq!(
        load(&st),
        tensor_err(1, Param::MovingVariance, TensorProblem::Missing)
    );

    let mut st = base.clone();
    let dup = entry(&mut st, "conv1.bias").clone();
    st.tensors.push(dup);
    assert_eq!(
        load(&st),
        tensor_err(0, Param::Bias, TensorProblem::Duplicate)
    );

    let mut st = base.clone();
    entry(&mut st, "dense1.weight").dtype = "F64".into();
    assert_eq!(
        load(&st),
        tensor_err(3, Param::Weight, TensorProblem::Dtype)
    );

    let mut st = base.clone();
    entry(&mut st, "conv1.weight").shape = vec![3, 3, 2, 1];
    assert_eq!(
        load(&st),
        tensor_err(0, Param::Weight, TensorProblem::Shape)
    );

    let mut st = base.clone();
    entry(&mut st, "dense1.weight").shape = vec![32 * 3];
    assert_eq!(
        load(&st),
        tensor_err(3, Param::Weight, TensorProblem::Shape)
    );

    let mut st = base.clone();
    entry(&mut st, "bn1.gamma").offsets = Some((8, 4));
    assert_eq!(
        load(&st),
        tensor_err(1, Param::Gamma, TensorProblem::Offsets)
    );

    let mut st = base.clone();
    entry(&mut st, "bn1.gamma").offsets = Some((0, 4));
    assert_eq!(
        load(&st),
        tensor_err(1, Param::Gamma, TensorProblem::Offsets)
    );

    let mut st = base.clone();
    entry(&mut st, "bn1.gamma").offsets = Some((u64::MAX - 7, u64::MAX));
    assert_eq!(
        load(&st),
        tensor_err(1, Param::Gamma, TensorProblem::Offsets)
    );

    // Point bn1.beta at conv1.weight's bytes.
    let mut st = base.clone();
    entry(&mut st, "bn1.beta").offsets = Some((4, 12));
    assert_eq!(
        load(&st),
        tensor_err(0, Param::Weight, TensorProblem::Overlap)
    );

    let mut st = base.clone();
    st.tensors.push(Entry {
        name: "conv9.weight".into(),
        dtype: "F32".into(),
        shape: vec![1],
        data: vec![0; 4],
        offsets: None,
    });
    assert!(matches!(load(&st), Err(Error::UnexpectedTensor { .. })));

    // A batchnorm suffix on a conv layer is not one of its tensors.
    let mut st = base.clone();
    entry(&mut st, "conv1.bias").name = "conv1.gamma".into();
    assert!(matches!(load(&st), Err(Error::UnexpectedTensor { .. })));
}

/// Class names are a JSON array (any character, commas included); files
/// that joined them by commas still load. A name holding an escape sequence
/// has no borrowed form: `class_name` gives `None` for it alone.
#[test]
fn class_names_in_both_forms() {
    let base = small().safetensors();
    let names = |value: &str| {
        let mut st = base.clone();
        st.metadata.retain(|(k, _)| k != "class_names");
        st.metadata.push(("class_names".into(), value.into()));
        let bytes = st.to_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        (0..4)
            .map(|i| model.class_name(i).map(str::to_string))
            .collect::<Vec<_>>()
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        names(r#"["tench, Tinca tinca","say \"hi\"","café"]"#),
        [some("tench, Tinca tinca"), None, some("café"), None]
    );
    assert_eq!(
        names("cat,dog,bird"),
        [some("cat"), some("dog"), some("bird"), None]
    );
}

#[test]
fn metadata_problems() {
    let base = small().safetensors();
    let set = |key: &str, value: Option<&str>| {
        let mut st = base.clone();
        st.metadata.retain(|(k, _)| k != key);
        if let Some(v) = value {
            st.metadata.push((key.into(), v.into()));
        }
        load(&st)
    };
    assert!(matches!(set("architecture", None), Err(Error::Metadata(_))));
    assert!(matches!(
        set("format", Some("cifar-cnn/2")),
        Err(Error::Metadata(_))
    ));
    assert_eq!(set("format", None), Ok(()));
    for wrong in ["a,b", r#"["a","b"]"#, r#"["a","b","c""#, r#"["a","b",c]"#] {
        assert!(
            matches!(set("class_names", Some(wrong)), Err(Error::Metadata(_))),
            "{wrong}"
        );
    }
    assert_eq!(set("class_names", None), Ok(()));
    assert_eq!(set("comment", Some("anything")), Ok(()));

    // Architecture problems, by field.
    let arch = base.metadata[1].1.clone();
    let with = |from: &str, to: &str| {
        assert!(arch.contains(from), "{from}");
        set("architecture", Some(&arch.replacen(from, to, 1)))
    };
    assert!(matches!(
        with(r#""type":"flatten""#, r#""type":"lstm""#),
        Err(Error::Architecture { .. })
    ));
    assert!(matches!(
        with(r#""type":"flatten""#, r#""type":"dropout","rate":0.1"#),
        Err(Error::Layer { index: 3, .. })
    ));
    assert!(matches!(
        with(r#""padding":"same""#, r#""padding":"valid""#),
        Err(Error::Tensor { .. })
    ));
    assert!(matches!(
        with(r#""kernel":3"#, r#""kernel":5,"padding":"valid""#),
        Err(Error::Architecture { .. })
    ));
    assert!(matches!(
        with(
            r#""kernel":3,"stride":1,"padding":"same""#,
            r#""kernel":5,"stride":1,"padding":"valid""#
        ),
        Err(Error::Layer { index: 0, .. })
    ));
    assert!(matches!(
        with(r#""units":3"#, r#""units":3.0"#),
        Err(Error::Architecture { .. })
    ));
    assert!(matches!(
        with(r#""name":"bn1""#, r#""name":"conv1""#),
        Err(Error::Layer { index: 1, .. })
    ));
    // Defaults apply to omitted fields; `\u` escapes inside the architecture decode.
    assert_eq!(with(r#","stride":1,"padding":"same""#, ""), Ok(()));
    assert_eq!(
        with(r#""type":"flatten""#, r#""type":"fl\u0061tten""#),
        Ok(())
    );
    assert_eq!(with(r#""name":"test","#, ""), Ok(()));
}

/// conv1 → relu ("skip1") → conv2 (3 filters) → conv3 → add skip1 → flatten → dense1.
fn residual() -> TestModel {
    let conv = |filters| L::Conv {
        filters,
        k: 3,
        stride: 1,
        same: true,
    };
    TestModel::random(
        Shape { h: 4, w: 4, c: 1 },
        vec![
            conv(2),
            L::Relu,
            conv(3),
            conv(2),
            L::Add { from: 1 },
            L::Flatten,
            L::Dense { units: 3 },
        ],
        0,
    )
}

#[test]
fn add_problems() {
    let base = residual().safetensors();
    let arch = base.metadata[1].1.clone();
    let with = |from: &str, to: &str| {
        assert!(arch.contains(from), "{from}");
        let mut st = base.clone();
        st.metadata[1].1 = arch.replacen(from, to, 1);
        load(&st)
    };
    assert_eq!(load(&base), Ok(()));
    let add = r#"{"type":"add","from":"skip1"}"#;
    let err = |problem| Err(Error::Add { index: 4, problem });
    assert_eq!(
        with(add, r#"{"type":"add","from":"skip9"}"#),
        err(AddProblem::UnknownSource)
    );
    // Itself, a later layer.
    assert_eq!(
        with(add, r#"{"type":"add","name":"a","from":"a"}"#),
        err(AddProblem::NotEarlier { source: 4 })
    );
    assert_eq!(
        with(add, r#"{"type":"add","from":"dense1"}"#),
        err(AddProblem::NotEarlier { source: 6 })
    );
    // conv2 gives 4×4×3, the add's input is 4×4×2.
    assert_eq!(
        with(add, r#"{"type":"add","from":"conv2"}"#),
        err(AddProblem::ShapeMismatch { source: 2 })
    );
    // A default name is a valid source.
    assert_eq!(with(add, r#"{"type":"add","from":"conv1"}"#), Ok(()));
    assert!(matches!(
        with(add, r#"{"type":"add"}"#),
        Err(Error::Layer { index: 4, .. })
    ));
    assert!(matches!(
        with(add, r#"{"type":"add","from":""}"#),
        Err(Error::Architecture { .. })
    ));
    assert!(matches!(
        with(r#""type":"flatten""#, r#""type":"flatten","from":"skip1""#),
        Err(Error::Layer { index: 5, .. })
    ));
    assert_eq!(
        Error::Add {
            index: 4,
            problem: AddProblem::ShapeMismatch { source: 2 }
        }
        .to_string(),
        "architecture layer 4 (add): `from` names layer 2, whose output shape differs from the add's input"
    );
    assert_eq!(
        Error::Add {
            index: 4,
            problem: AddProblem::UnknownSource
        }
        .to_string(),
        "architecture layer 4 (add): `from` names no layer"
    );
}

#[test]
fn residual_scratch_is_exact() {
    let tm = residual();
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    // conv3 (48 in + 32 out, and between them its small-image workspace of
    // 16 pixels × 9 taps × 3 input channels) beside skip1's stash (32).
    let needed = 48 + 32 + 16 * 9 * 3 + 32;
    assert_eq!(model.scratch_len(), needed);
    let image = vec![7u8; 16];
    let mut scratch = vec![f32::NAN; needed];
    let mut probs = [0f32; 3];
    assert!(model.classify(&image, &mut scratch, &mut probs).is_ok());
    assert_eq!(
        model.classify(&image, &mut scratch[..needed - 1], &mut probs),
        Err(Error::ScratchTooSmall {
            needed,
            actual: needed - 1
        })
    );
}

#[test]
fn too_many_layers() {
    let mut layers = vec![L::Flatten];
    layers.extend(std::iter::repeat_n(L::Relu, 62));
    layers.push(L::Dense { units: 2 });
    let input = Shape { h: 2, w: 2, c: 1 };
    assert!(Model::from_bytes(&TestModel::random(input, layers.clone(), 0).to_bytes()).is_ok());
    layers.insert(1, L::Dropout);
    assert_eq!(
        Model::from_bytes(&TestModel::random(input, layers, 0).to_bytes()).err(),
        Some(Error::TooManyLayers)
    );
}

#[test]
fn malformed_headers() {
    for header in [
        "",
        "[]",
        "{",
        r#"{"__metadata__":{}}"#,
        r#"{"__metadata__":{"architecture":1}}"#,
        r#"{"__metadata__":{},"__metadata__":{}}"#,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[1]}}"#,
        r#"{"__metadata__":{"architecture":"{\"input\":{}}"}}"#,
        r#"{} x"#,
    ] {
        let file = raw_file(header, &[0; 16]);
        assert!(Model::from_bytes(&file).is_err(), "{header}");
    }
    // A header padded with spaces (as safetensors writes it) is fine.
    let st = small().safetensors();
    let (h, data) = st.header_and_data();
    assert!(Model::from_bytes(&raw_file(&format!("{h}{}", " ".repeat(13)), &data)).is_ok());
    assert!(json_string("a\"b").contains("\\\""));
}

#[test]
fn sizes_names_and_argument_checks() {
    let tm = model1(0);
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.input_shape(), (32, 32, 3));
    assert_eq!(model.input_len(), 3072);
    assert_eq!(model.num_classes(), 10);
    assert_eq!(model.num_layers(), 20);
    // conv2's input and output side by side: 2 × 32·32·32.
    assert_eq!(model.scratch_len(), 65_536);
    assert_eq!(model.scratch_bytes(), 262_144);
    assert_eq!(model.class_name(0), Some("class0"));
    assert_eq!(model.class_name(9), Some("class9"));
    assert_eq!(model.class_name(10), None);
    // Debug output describes the layers without dumping the weights.
    let debug = format!("{model:?}");
    assert!(
        debug.contains("weight_bytes: 147456") && debug.len() < 8000,
        "{debug}"
    );

    let image = vec![0u8; 3072];
    let mut scratch = vec![0f32; 65_536];
    let mut probs = [0f32; 10];
    assert_eq!(
        model.classify(&image[1..], &mut scratch, &mut probs),
        Err(Error::ImageSize {
            expected: 3072,
            actual: 3071
        })
    );
    assert_eq!(
        model.classify(&image, &mut scratch[1..], &mut probs),
        Err(Error::ScratchTooSmall {
            needed: 65_536,
            actual: 65_535
        })
    );
    assert_eq!(
        model.classify(&image, &mut scratch, &mut probs[1..]),
        Err(Error::OutputTooSmall {
            needed: 10,
            actual: 9
        })
    );
    // Larger buffers are fine.
    let mut big = vec![0f32; 70_000];
    let mut more = [0f32; 12];
    assert!(model.classify(&image, &mut big, &mut more).is_ok());

    // Errors read well.
    let e = Error::Tensor {
        layer: 3,
        param: Param::MovingMean,
        problem: TensorProblem::Missing,
    };
    assert_eq!(e.to_string(), "tensor `moving_mean` of layer 3 is missing");
}

/// A NaN or infinite weight, or a negative batch-norm variance, is refused at
/// load with the tensor named: it could only give NaN (or backend-dependent)
/// probabilities. (Found by the `infer_model` fuzz target.)
#[test]
fn non_finite_values_are_refused() {
    let tm = small();
    for (name, layer, param, bad) in [
        ("conv1.weight", 0, Param::Weight, f32::NAN),
        ("conv1.bias", 0, Param::Bias, f32::INFINITY),
        ("bn1.gamma", 1, Param::Gamma, f32::NEG_INFINITY),
        ("bn1.moving_variance", 1, Param::MovingVariance, -0.5),
        ("dense1.weight", 3, Param::Weight, f32::NAN),
    ] {
        let mut st = tm.safetensors();
        entry(&mut st, name).data[4..8].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(
            load(&st),
            tensor_err(layer, param, TensorProblem::Values),
            "{name} = {bad}"
        );
    }
    // A variance of exactly 0 is fine (epsilon keeps the square root positive).
    let mut st = tm.safetensors();
    entry(&mut st, "bn1.moving_variance").data[..4].copy_from_slice(&0f32.to_le_bytes());
    assert_eq!(load(&st), Ok(()));
}
