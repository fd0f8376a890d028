//! Fully connected layer: `y = x · W + b`, with `W` stored `[in, out]` (Keras layout).

use super::{Layer, Mode, NamedTensor, ParamVisitor};
use crate::kernels::gemm::{Backend, Op};
use crate::kernels::tensor::{ImageShape, Tensor};

pub struct Dense {
    inputs: usize,
    units: usize,
    /// `[inputs, units]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Vec<f32>,
    gemm: Backend,
}

impl Dense {
    /// Glorot-uniform weights, zero bias (the Keras defaults).
    pub fn new(input: ImageShape, units: usize, rng: &mut impl rand::Rng) -> Self {
        let inputs = input.len();
        Self {
            inputs,
            units,
            weight: crate::layers::init::glorot_uniform(inputs, units, inputs * units, rng),
            bias: vec![0.0; units],
            dweight: vec![0.0; inputs * units],
            dbias: vec![0.0; units],
            gemm: Backend::default(),
        }
    }
}

impl Layer for Dense {
    fn set_compute(&mut self, compute: super::Compute) {
        self.gemm = compute.gemm;
    }

    fn output_shape(&self) -> ImageShape {
        ImageShape::vector(self.units)
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        let n = x.n;
        y.resize(n, self.output_shape());
        for row in y.data.chunks_exact_mut(self.units) {
            row.copy_from_slice(&self.bias);
        }
        // Y[n×out] += X[n×in] · W[in×out]
        self.gemm.sgemm(
            n,
            self.inputs,
            self.units,
            &x.data,
            Op::N,
            &self.weight,
            Op::N,
            1.0,
            &mut y.data,
        );
    }

    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let n = x.n;
        // dW[in×out] = Xᵀ · dY
        self.gemm.sgemm(
            self.inputs,
            n,
            self.units,
            &x.data,
            Op::T,
            &dy.data,
            Op::N,
            0.0,
            &mut self.dweight,
        );
        // db = Σ_rows dY
        self.dbias.fill(0.0);
        for row in dy.data.chunks_exact(self.units) {
            for (d, &g) in self.dbias.iter_mut().zip(row) {
                *d += g;
            }
        }
        if let Some(dx) = dx {
            // dX[n×in] = dY · Wᵀ
            dx.resize(n, x.image_shape());
            self.gemm.sgemm(
                n,
                self.units,
                self.inputs,
                &dy.data,
                Op::N,
                &self.weight,
                Op::T,
                0.0,
                &mut dx.data,
            );
        }
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        f("weight", &mut self.weight, &self.dweight, true);
        f("bias", &mut self.bias, &self.dbias, false);
    }

    fn tensors(&self) -> Vec<NamedTensor<'_>> {
        vec![
            NamedTensor {
                suffix: "weight",
                shape: vec![self.inputs, self.units],
                data: &self.weight,
            },
            NamedTensor {
                suffix: "bias",
                shape: vec![self.units],
                data: &self.bias,
            },
        ]
    }

    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.weight, &mut self.bias]
    }
}
