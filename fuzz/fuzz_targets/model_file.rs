//! `Network::from_safetensors_bytes` on arbitrary bytes: Ok or Err, never a
//! panic, never an allocation out of proportion to the input. A file that
//! loads must export again and reload to the same tensors and class names.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::model::network::Network;

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let Ok(net) = Network::from_safetensors_bytes(data, "fuzz") else {
        return Corpus::Keep;
    };
    let names: Vec<&str> = net.class_names.iter().map(String::as_str).collect();
    let again = net
        .to_safetensors_bytes(&names)
        .expect("a loaded network exports");
    let back = Network::from_safetensors_bytes(&again, "re-export")
        .unwrap_or_else(|e| panic!("a re-exported model must load: {e}"));
    assert_eq!(back.spec(), net.spec(), "spec changed by a round trip");
    assert_eq!(back.class_names, net.class_names, "class names changed");
    assert!(
        back.snapshot() == net.snapshot(),
        "tensors changed by a round trip"
    );
    Corpus::Keep
});
