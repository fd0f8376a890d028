//! A batch of activations: a flat `Vec<f32>` in NHWC order plus its shape.
//!
//! Every layer consumes and produces this one type. Dense layers see
//! `height = width = 1`, so a batch of vectors is `[n, 1, 1, features]`.

/// The shape of one image (or one vector): `height × width × channels`, channels fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageShape {
    pub const fn new(height: usize, width: usize, channels: usize) -> Self {
        Self {
            height,
            width,
            channels,
        }
    }

    /// A vector of `n` features.
    pub const fn vector(n: usize) -> Self {
        Self::new(1, 1, n)
    }

    /// Number of values in one image.
    pub const fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels per channel.
    pub const fn pixels(&self) -> usize {
        self.height * self.width
    }

    pub const fn is_vector(&self) -> bool {
        self.height == 1 && self.width == 1
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.height, self.width, self.channels)
    }
}

/// A batch of `n` images of shape `shape`, stored NHWC in `data`.
#[derive(Clone, Debug, Default)]
pub struct Tensor {
    pub n: usize,
    pub shape: Option<ImageShape>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(n: usize, shape: ImageShape) -> Self {
        Self {
            n,
            shape: Some(shape),
            data: vec![0.0; n * shape.len()],
        }
    }

    /// Re-shapes in place, reusing the allocation: once a buffer has held the
    /// largest batch, later calls never allocate. Contents are unspecified.
    pub fn resize(&mut self, n: usize, shape: ImageShape) {
        self.n = n;
        self.shape = Some(shape);
        self.data.resize(n * shape.len(), 0.0);
    }

    pub fn image_shape(&self) -> ImageShape {
        self.shape.expect("tensor used before it was shaped")
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.image_shape().len()
    }
}
