//! `Network::freeze`: frozen layers keep their parameters (and a frozen batch
//! norm its running statistics), the trained ones get the same gradients as
//! without freezing, and bad requests are refused.

use trainer::layers::{Param, Params};
use trainer::optim::Adam;
use trainer::train::spec_file::SpecFile;
use trainer::Network;

fn net(name: &str) -> Network {
    Network::new(&SpecFile::builtin(name).unwrap().model, 3).unwrap()
}

fn batch(n: usize) -> (Vec<u8>, Vec<u8>) {
    let images = (0..n * 3072).map(|i| (i * 31 % 253) as u8).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    (images, labels)
}

/// `(name, gradient)` of every parameter the optimiser sees.
fn grads(net: &mut Network) -> Vec<(String, Vec<f32>)> {
    let mut out = vec![];
    net.visit_params(&mut |p: Param<'_>| out.push((p.name(), p.grad.to_vec())));
    out
}

fn tensors(net: &Network) -> Vec<(String, Vec<f32>)> {
    net.named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.to_vec()))
        .collect()
}

#[test]
fn frozen_layers_do_not_change_and_trained_ones_get_the_same_gradients() {
    // fast: conv/bn pairs, residual adds, a dense head.
    let (images, labels) = batch(8);
    let mut full = net("fast");
    full.set_input_u8(&images, 8);
    full.forward_backward(&labels);
    let want = grads(&mut full);

    let mut tuned = net("fast");
    let frozen: Vec<String> = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tuned.freeze(&frozen).unwrap();
    let before = tensors(&tuned);
    tuned.set_input_u8(&images, 8);
    tuned.forward_backward(&labels);
    let got = grads(&mut tuned);
    // The optimiser sees exactly the trained parameters…
    assert!(got
        .iter()
        .all(|(n, _)| !frozen.iter().any(|f| n.starts_with(&format!("{f}.")))));
    assert_eq!(got.len(), want.len() - 2 * 3 - 2 * 3);
    // …with the gradients of the unfrozen network, except that frozen batch
    // norms run on their running statistics: the layers after them see
    // other activations. So compare on a network whose frozen part has no
    // batch norm: model 1, its convolutions frozen.
    let mut full = net("model1");
    full.set_input_u8(&images, 8);
    full.forward_backward(&labels);
    let want: Vec<_> = grads(&mut full)
        .into_iter()
        .filter(|(n, _)| n.starts_with("dense"))
        .collect();
    let mut head = net("model1");
    head.freeze(&["conv*".to_string()]).unwrap();
    head.set_input_u8(&images, 8);
    head.forward_backward(&labels);
    assert_eq!(grads(&mut head), want);

    // An optimiser step changes only the trained tensors; running statistics
    // of frozen batch norms stay.
    let mut adam = Adam::new(0.01);
    adam.step(&mut tuned);
    let after = tensors(&tuned);
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let is_frozen = frozen.iter().any(|f| name.starts_with(&format!("{f}.")));
        if is_frozen {
            assert_eq!(a, b, "{name} changed");
        } else if name.ends_with(".weight") {
            assert_ne!(a, b, "{name} did not train");
        }
    }
}

#[test]
fn bad_freezes_are_refused() {
    let mut m = net("fast");
    let err = |m: &mut Network, p: &[&str]| {
        m.freeze(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_err()
            .to_string()
    };
    let e = err(&mut m, &["conv99"]);
    assert!(e.contains("conv99") && e.contains("conv1, bn1"), "{e}");
    let e = err(&mut m, &["conv*", "bn*", "dense*"]);
    assert!(e.contains("nothing would train"), "{e}");
    let e = err(&mut m, &["bn2"]);
    assert!(
        e.contains("batch norm bn2 is frozen but conv1 before it is trained"),
        "{e}"
    );
    // Refusals leave the network as it was: everything trains.
    let (images, labels) = batch(2);
    m.set_input_u8(&images, 2);
    m.forward_backward(&labels);
    assert_eq!(
        grads(&mut m).len(),
        net("fast").named_tensors().len() - 2 * 8
    );
}
