//! Scene layout of the synthetic visual-search world: a large canvas, background clutter, and a
//! set of small objects (shape, color, position, size, depth). Pure data; `render.rs` draws it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

pub const SHAPES: [Shape; 4] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Diamond,
];

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
        }
    }

    /// Whether the point (u, v), relative to the object's center in units of its half size,
    /// lies inside the shape.
    pub fn contains(self, u: f64, v: f64) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 0.85 && v.abs() <= 0.85,
            // Apex up; base at v = 0.85, apex at v = -1.
            Shape::Triangle => (-1.0..=0.85).contains(&v) && u.abs() <= (v + 1.0) / 1.85,
            Shape::Diamond => u.abs() + v.abs() <= 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    White,
    Black,
}

pub const COLORS: [Color; 8] = [
    Color::Red,
    Color::Green,
    Color::Blue,
    Color::Yellow,
    Color::Purple,
    Color::Orange,
    Color::White,
    Color::Black,
];

impl Color {
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Purple => "purple",
            Color::Orange => "orange",
            Color::White => "white",
            Color::Black => "black",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 30, 30],
            Color::Green => [30, 170, 50],
            Color::Blue => [30, 70, 225],
            Color::Yellow => [240, 215, 30],
            Color::Purple => [150, 50, 190],
            Color::Orange => [250, 135, 20],
            Color::White => [250, 250, 250],
            Color::Black => [15, 15, 15],
        }
    }
}

/// One object the questions can be about. Positions and sizes in pixels of the full scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub cx: f64,
    pub cy: f64,
    /// Side of the object's bounding square.
    pub size: f64,
    /// 0 = nearest, 1 = farthest; nearer objects are drawn later (on top) and larger.
    pub depth: f64,
}

impl Object {
    pub fn describe(&self) -> String {
        format!("{} {}", self.color.name(), self.shape.name())
    }
    /// Pixel bbox `[x1, y1, x2, y2]`.
    pub fn bbox_px(&self) -> [f64; 4] {
        let h = self.size / 2.0;
        [self.cx - h, self.cy - h, self.cx + h, self.cy + h]
    }
}

/// Background clutter: muted blobs that are never asked about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blob {
    pub cx: f64,
    pub cy: f64,
    pub rx: f64,
    pub ry: f64,
    pub rgb: [u8; 3],
    /// Ellipse or rectangle.
    pub round: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    /// Background gradient, top to bottom.
    pub sky: [u8; 3],
    pub ground: [u8; 3],
    pub blobs: Vec<Blob>,
    pub objects: Vec<Object>,
    /// Amplitude of the per-pixel noise.
    pub noise: u8,
    /// Seed of the noise (the rest of the scene is explicit).
    pub noise_seed: u64,
    /// The ground is lit from the top left (`render::render` says how), over the gradient.
    #[serde(default)]
    pub lit: bool,
}

/// Knobs of scene generation.
#[derive(Debug, Clone, Copy)]
pub struct SceneParams {
    pub width: u32,
    pub height: u32,
    pub object_size: f64,
    pub clutter: usize,
    pub noise: u8,
    /// One gray ground in every scene instead of a random two-tone gradient: "studio" views in
    /// which the only thing that changes between images is the objects.
    pub plain: bool,
    /// The ground lit from the top left: brighter at the top, bluish at the left, warmer at the
    /// right (`Scene::lit`). Models whose only position signal is rotary (relative) then read
    /// where an object is from the ground around it, as from the light in a photograph.
    pub lit: bool,
}

impl Scene {
    /// An empty scene: background and clutter only.
    pub fn background(p: &SceneParams, rng: &mut ChaCha8Rng) -> Scene {
        let muted = |rng: &mut ChaCha8Rng, lo: u8, hi: u8| -> [u8; 3] {
            let base = rng.random_range(lo..hi) as i32;
            let mut c = [0u8; 3];
            for ch in &mut c {
                *ch = (base + rng.random_range(-18..=18)).clamp(0, 255) as u8;
            }
            c
        };
        let (w, h) = (p.width as f64, p.height as f64);
        let blobs = (0..p.clutter)
            .map(|_| {
                let r = p.object_size * rng.random_range(1.5..8.0);
                Blob {
                    cx: rng.random_range(0.0..w),
                    cy: rng.random_range(0.0..h),
                    rx: r * rng.random_range(0.5..1.5),
                    ry: r * rng.random_range(0.5..1.5),
                    rgb: muted(rng, 70, 180),
                    round: rng.random_bool(0.5),
                }
            })
            .collect();
        // Drawn in every case, so that `plain` leaves the rest of the random stream unchanged.
        let (sky, ground) = (muted(rng, 140, 190), muted(rng, 90, 140));
        let (sky, ground) = if p.plain {
            ([128, 128, 122], [128, 128, 122])
        } else {
            (sky, ground)
        };
        Scene {
            width: p.width,
            height: p.height,
            sky,
            ground,
            blobs,
            objects: Vec::new(),
            noise: p.noise,
            noise_seed: rng.random(),
            lit: p.lit,
        }
    }

    /// Places an object of `size` near (cx, cy) ± `spread` (anywhere when `spread` is None) so that
    /// it keeps a gap from every existing object and stays inside the canvas. None if the area is
    /// too crowded after a bounded number of tries (the caller then draws a new scene).
    pub fn place(
        &self,
        rng: &mut ChaCha8Rng,
        size: f64,
        around: Option<(f64, f64, f64)>,
    ) -> Option<(f64, f64)> {
        let margin = size;
        let (w, h) = (self.width as f64, self.height as f64);
        for _ in 0..200 {
            let (x, y) = match around {
                Some((cx, cy, spread)) => (
                    cx + rng.random_range(-spread..=spread),
                    cy + rng.random_range(-spread..=spread),
                ),
                None => (
                    rng.random_range(margin..w - margin),
                    rng.random_range(margin..h - margin),
                ),
            };
            if x < margin || y < margin || x > w - margin || y > h - margin {
                continue;
            }
            let clear = self.objects.iter().all(|o| {
                let gap = (o.size + size) * 0.5 + size * 0.6;
                (o.cx - x).abs() > gap || (o.cy - y).abs() > gap
            });
            if clear {
                return Some((x, y));
            }
        }
        None
    }

    /// Normalized bbox of a pixel box grown by `pad` pixels, clamped to the canvas.
    pub fn normalized(&self, px: [f64; 4], pad: f64) -> [f64; 4] {
        let grown = [px[0] - pad, px[1] - pad, px[2] + pad, px[3] + pad];
        normalize_outward(grown, [0.0, 0.0, self.width as f64, self.height as f64])
    }

    /// A short stable fingerprint of the layout, to check that splits share no scene.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.noise_seed.hash(&mut hasher);
        for o in &self.objects {
            (o.shape, o.color, o.cx.to_bits(), o.cy.to_bits()).hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// `px` (pixels of the scene) normalized to the pixel rectangle `frame` = `[x, y, x + w, y + h]`,
/// clamped to it and rounded *outward* to 3 decimals: the expert writes the box in its text, the
/// crop is made from exactly that text, and outward rounding keeps the object inside the crop.
pub fn normalize_outward(px: [f64; 4], frame: [f64; 4]) -> [f64; 4] {
    let (w, h) = (frame[2] - frame[0], frame[3] - frame[1]);
    // The epsilon keeps 0.175 * 1000 = 175.00000000000003 from rounding up to 0.176.
    let down = |v: f64| ((v * 1000.0 + 1e-6).floor() / 1000.0).clamp(0.0, 1.0);
    let up = |v: f64| ((v * 1000.0 - 1e-6).ceil() / 1000.0).clamp(0.0, 1.0);
    [
        down((px[0] - frame[0]) / w),
        down((px[1] - frame[1]) / h),
        up((px[2] - frame[0]) / w),
        up((px[3] - frame[1]) / h),
    ]
}

/// Union of pixel boxes.
pub fn union(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shapes_differ_and_contain_their_center() {
        for s in SHAPES {
            assert!(s.contains(0.0, 0.0), "{s:?}");
        }
        // Corners distinguish the square from circle and diamond; the triangle's apex is narrow.
        assert!(Shape::Square.contains(0.8, 0.8) && !Shape::Circle.contains(0.8, 0.8));
        assert!(Shape::Circle.contains(0.6, 0.6) && !Shape::Diamond.contains(0.6, 0.6));
        assert!(!Shape::Triangle.contains(0.5, -0.8) && Shape::Triangle.contains(0.5, 0.8));
    }

    #[test]
    fn placement_keeps_objects_apart_and_inside() {
        let p = SceneParams {
            width: 200,
            height: 150,
            object_size: 12.0,
            clutter: 5,
            noise: 10,
            plain: false,
            lit: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut scene = Scene::background(&p, &mut rng);
        for _ in 0..15 {
            let (cx, cy) = scene
                .place(&mut rng, 12.0, None)
                .expect("room for 15 objects");
            scene.objects.push(Object {
                shape: Shape::Circle,
                color: Color::Red,
                cx,
                cy,
                size: 12.0,
                depth: 0.5,
            });
        }
        for (i, a) in scene.objects.iter().enumerate() {
            assert!(a.cx >= 12.0 && a.cx <= 188.0 && a.cy >= 12.0 && a.cy <= 138.0);
            for b in &scene.objects[i + 1..] {
                assert!(
                    (a.cx - b.cx).abs() > 12.0 || (a.cy - b.cy).abs() > 12.0,
                    "overlap {a:?} {b:?}"
                );
            }
        }
        let n = scene.normalized([10.0, 10.0, 30.0, 20.0], 5.0);
        assert_eq!(n, [0.025, 0.033, 0.175, 0.167]);
    }

    #[test]
    fn plain_scenes_share_one_ground_and_keep_the_random_stream() {
        let params = |plain| SceneParams {
            width: 120,
            height: 120,
            object_size: 10.0,
            clutter: 3,
            noise: 0,
            plain,
            lit: false,
        };
        let draw = |plain, seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let scene = Scene::background(&params(plain), &mut rng);
            let next: u64 = rng.random();
            (scene, next)
        };
        let ((a, next_a), (b, _)) = (draw(true, 1), draw(true, 2));
        assert_eq!((a.sky, a.ground), (b.sky, b.ground));
        assert_eq!(a.sky, a.ground);
        let (c, next_c) = draw(false, 1);
        assert_ne!((c.sky, c.ground), (a.sky, a.ground));
        // Same clutter and the same draws afterwards: only the ground differs.
        assert_eq!(format!("{:?}", c.blobs), format!("{:?}", a.blobs));
        assert_eq!(next_a, next_c);
    }
}
