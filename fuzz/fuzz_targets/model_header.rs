//! `Network::from_safetensors_bytes`, structure-aware: the input is the
//! safetensors JSON header followed by the tensor data, and the harness
//! writes the 8-byte header length in front. (Mutating a whole file, as
//! `model_file` does, mostly breaks that length; here every mutation of the
//! header, the spec inside it included, reaches the parser.) Same checks as
//! `model_file`: Ok or Err, never a panic or an outsized allocation.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::model::network::Network;

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let file = trainer_fuzz::model_file(data);
    if let Ok(net) = Network::from_safetensors_bytes(&file, "fuzz") {
        let names: Vec<&str> = net.class_names.iter().map(String::as_str).collect();
        let again = net.to_safetensors_bytes(&names).expect("export");
        let back = Network::from_safetensors_bytes(&again, "re-export")
            .unwrap_or_else(|e| panic!("a re-exported model must load: {e}"));
        assert!(
            back.snapshot() == net.snapshot(),
            "tensors changed by a round trip"
        );
    }
    Corpus::Keep
});
