//! Spec files and architectures from arbitrary text: `SpecFile::parse` and
//! `ModelSpec::from_json_str` return Ok or Err, never panic. A spec that
//! parses must survive its canonical JSON (what exported files store), and,
//! when small, build a network (`Network::new` never refuses a checked spec)
//! whose exported file loads back.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::model::network::Network;
use trainer::model::spec::ModelSpec;
use trainer::train::spec_file::SpecFile;
use trainer_fuzz::{class_names, small_enough};

fn check_model(model: &ModelSpec) {
    let json = model.to_json();
    let again = ModelSpec::from_json_str(&json)
        .unwrap_or_else(|e| panic!("canonical JSON must parse again: {e}\n{json}"));
    assert_eq!(&again, model, "canonical JSON changed the spec");
    if !small_enough(model) {
        return;
    }
    let net = Network::new(model, 0).unwrap_or_else(|e| panic!("a checked spec must build: {e}"));
    let names = class_names(net.num_classes());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bytes = net.to_safetensors_bytes(&names).expect("export");
    let back = Network::from_safetensors_bytes(&bytes, "fuzz export")
        .unwrap_or_else(|e| panic!("an exported network must load: {e}"));
    assert_eq!(back.spec(), model, "export changed the spec");
}

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if let Ok(mut file) = SpecFile::parse(text, "fuzz") {
        check_model(&file.model);
        // `"units": "classes"` takes a data set's class count.
        let classes = 1 + data.len() % 300;
        if file.set_classes(classes).is_ok() {
            check_model(&file.model);
        }
    }
    if let Ok(model) = ModelSpec::from_json_str(text) {
        check_model(&model);
    }
    Corpus::Keep
});
