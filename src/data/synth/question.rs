//! Questions about a scene: each generator builds a scene in which its question has exactly one
//! right answer (unique shapes, colors or descriptors; clear spatial or depth gaps), then returns the
//! MCQ and the pixel boxes the expert has to look at.

use crate::data::synth::scene::{COLORS, Color, Object, SHAPES, Scene, SceneParams, Shape, union};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

/// Question kinds, each a report category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Color,
    ShapeOf,
    Horizontal,
    Vertical,
    Counting,
    Depth,
    /// Which ninth of the image (3x3 grid) holds the object's center: grounding as an MCQ.
    Region,
    /// The color of the object in a named quarter of the image (one object per quarter).
    QuadrantColor,
    /// The shape of the object in a named quarter of the image (one object per quarter).
    QuadrantShape,
    /// Which normalized box is a named quarter of the image: the coordinate convention of
    /// boxes (what a base model knows of grounding), asked about any scene.
    QuadrantBox,
    /// Which quarter of the image holds the object of a named color (one object per quarter):
    /// grounding, the inverse of the quadrant questions, asked about pretraining scenes.
    QuadrantWhere,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Color,
        Kind::ShapeOf,
        Kind::Horizontal,
        Kind::Vertical,
        Kind::Counting,
        Kind::Depth,
        Kind::Region,
        Kind::QuadrantColor,
        Kind::QuadrantShape,
        Kind::QuadrantBox,
        Kind::QuadrantWhere,
    ];

    pub fn category(self) -> &'static str {
        match self {
            Kind::Color => "attribute/color",
            Kind::ShapeOf => "attribute/shape",
            Kind::Horizontal => "position/horizontal",
            Kind::Vertical => "position/vertical",
            Kind::Counting => "counting",
            Kind::Depth => "depth/order",
            Kind::Region => "position/region",
            Kind::QuadrantColor => "quadrant/color",
            Kind::QuadrantShape => "quadrant/shape",
            Kind::QuadrantBox => "quadrant/box",
            Kind::QuadrantWhere => "quadrant/where",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Question {
    pub kind: Kind,
    pub scene: Scene,
    pub question: String,
    pub options: Vec<String>,
    pub answer: usize,
    /// Pixel boxes of what the question is about (one per object, or one for a counted group).
    pub focus: Vec<[f64; 4]>,
}

impl Question {
    /// Union of the focus boxes.
    pub fn focus_union(&self) -> [f64; 4] {
        self.focus
            .iter()
            .copied()
            .reduce(union)
            .unwrap_or([0.0, 0.0, 1.0, 1.0])
    }
}

/// How a question is laid out: `near` keeps the objects of a question close together, so that
/// one crop (or a crop and a depth map) covers them all.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub near: bool,
    /// Extra objects that are never the answer.
    pub distractors: (usize, usize),
    /// Options in one fixed order per question kind (every color, every shape, counts 1 to 5,
    /// "closer"/"farther") instead of shuffled subsets. A letter then names the same answer in
    /// every item, so a small model trained from scratch can learn to perceive without first
    /// learning to look its answer up in the option list (which tiny decoders learn slowly).
    pub canonical_options: bool,
    /// Every distractor has a color no other object in the scene has, and the two objects of a
    /// position or depth question differ in color: objects are then told apart by color alone,
    /// which a small vision tower learns far faster than shapes of a few pixels.
    pub unique_colors: bool,
}

/// Draws a scene and a question of `kind`, retrying with fresh layouts when a scene gets too
/// crowded to place everything (rare; bounded).
pub fn generate(
    kind: Kind,
    p: &SceneParams,
    layout: Layout,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Question> {
    for _ in 0..50 {
        let q = match kind {
            Kind::Color | Kind::ShapeOf => attribute(kind, p, layout, rng),
            Kind::Region => region(p, layout, rng),
            Kind::QuadrantColor | Kind::QuadrantShape | Kind::QuadrantWhere => {
                quadrant(kind, p, rng)
            }
            Kind::QuadrantBox => quadrant_box(p, rng),
            Kind::Horizontal | Kind::Vertical => position(kind, p, layout, rng),
            Kind::Counting => counting(p, layout, rng),
            Kind::Depth => depth(p, layout, rng),
        };
        if let Some(q) = q {
            return Ok(q);
        }
    }
    anyhow::bail!(
        "cannot lay out a {} question on a {}x{} scene with objects of {} px: enlarge the scene or shrink the objects",
        kind.category(),
        p.width,
        p.height,
        p.object_size
    )
}

/// Object size grows with nearness (a monocular depth cue for the depth questions).
fn sized(p: &SceneParams, depth: f64) -> f64 {
    p.object_size * (1.25 - 0.5 * depth)
}

fn object(
    p: &SceneParams,
    rng: &mut ChaCha8Rng,
    shape: Shape,
    color: Color,
    at: Option<(f64, f64, f64)>,
    scene: &Scene,
) -> Option<Object> {
    let depth = rng.random_range(0.05..0.65);
    let size = sized(p, depth);
    let (cx, cy) = scene.place(rng, size, at)?;
    Some(Object {
        shape,
        color,
        cx,
        cy,
        size,
        depth,
    })
}

/// Adds distractors drawn from `allowed` (shape, color) pairs, anywhere in the scene.
fn distract(
    scene: &mut Scene,
    p: &SceneParams,
    layout: Layout,
    rng: &mut ChaCha8Rng,
    allowed: impl Fn(Shape, Color) -> bool,
) {
    let mut pairs: Vec<(Shape, Color)> = SHAPES
        .iter()
        .flat_map(|&s| COLORS.iter().map(move |&c| (s, c)))
        .filter(|&(s, c)| allowed(s, c))
        .collect();
    let n = rng.random_range(layout.distractors.0..=layout.distractors.1);
    for _ in 0..n {
        if layout.unique_colors {
            pairs.retain(|&(_, c)| scene.objects.iter().all(|o| o.color != c));
        }
        let Some(&(s, c)) = pairs.choose(rng) else {
            return;
        };
        // A crowded scene simply gets fewer distractors.
        if let Some(o) = object(p, rng, s, c, None, scene) {
            scene.objects.push(o);
        }
    }
}

fn attribute(
    kind: Kind,
    p: &SceneParams,
    layout: Layout,
    rng: &mut ChaCha8Rng,
) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let shape = *SHAPES.choose(rng)?;
    let color = *COLORS.choose(rng)?;
    let target = object(p, rng, shape, color, None, &scene)?;
    scene.objects.push(target);
    let (question, options, answer) = if kind == Kind::Color {
        // The shape is unique, so "the triangle" names one object; colors repeat among distractors.
        distract(&mut scene, p, layout, rng, |s, _| s != shape);
        let options = if layout.canonical_options {
            COLORS.to_vec()
        } else {
            let mut options: Vec<Color> = COLORS.iter().copied().filter(|&c| c != color).collect();
            options.shuffle(rng);
            options.truncate(3);
            options.push(color);
            options.shuffle(rng);
            options
        };
        let answer = options.iter().position(|&c| c == color)?;
        (
            format!("What is the color of the {}?", shape.name()),
            options.iter().map(|c| c.name().to_string()).collect(),
            answer,
        )
    } else {
        distract(&mut scene, p, layout, rng, |_, c| c != color);
        let mut options = SHAPES.to_vec();
        if !layout.canonical_options {
            options.shuffle(rng);
        }
        let answer = options.iter().position(|&s| s == shape)?;
        (
            format!("What is the shape of the {} object?", color.name()),
            options.iter().map(|s| s.name().to_string()).collect(),
            answer,
        )
    };
    Some(Question {
        kind,
        scene,
        question,
        options,
        answer,
        focus: vec![target.bbox_px()],
    })
}

/// The nine parts of an image, row by row: the options of a region question, in this order.
pub const REGIONS: [&str; 9] = [
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
];

/// Index into [`REGIONS`] of the ninth holding the pixel (x, y) of a `w` x `h` image.
pub fn region_of(x: f64, y: f64, w: f64, h: f64) -> usize {
    let third = |v: f64, side: f64| ((3.0 * v / side).floor() as usize).min(2);
    3 * third(y, h) + third(x, w)
}

/// "In which part of the image is the triangle?": the object (a unique shape) is placed in a
/// drawn ninth with its center at least a quarter object size from the ninth's edges, so the
/// answer is never a matter of a pixel.
fn region(p: &SceneParams, layout: Layout, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (shape, color) = (*SHAPES.choose(rng)?, *COLORS.choose(rng)?);
    let cell = rng.random_range(0..REGIONS.len());
    let (w, h) = (f64::from(p.width), f64::from(p.height));
    let guard = p.object_size * 0.25;
    let (cw, ch) = (w / 3.0, h / 3.0);
    let (col, row) = ((cell % 3) as f64, (cell / 3) as f64);
    let spread = (cw.min(ch) / 2.0 - guard).max(0.0);
    let target = object(
        p,
        rng,
        shape,
        color,
        Some(((col + 0.5) * cw, (row + 0.5) * ch, spread)),
        &scene,
    )?;
    let inner = |v: f64, lo: f64, side: f64| v >= lo + guard && v <= lo + side - guard;
    if !inner(target.cx, col * cw, cw) || !inner(target.cy, row * ch, ch) {
        return None;
    }
    scene.objects.push(target);
    distract(&mut scene, p, layout, rng, |s, _| s != shape);
    Some(Question {
        kind: Kind::Region,
        scene,
        question: format!("In which part of the image is the {}?", shape.name()),
        options: REGIONS.iter().map(|r| r.to_string()).collect(),
        answer: region_of(target.cx, target.cy, w, h),
        focus: vec![target.bbox_px()],
    })
}

/// The four quarters of an image, row by row.
pub const QUADRANTS: [&str; 4] = ["top left", "top right", "bottom left", "bottom right"];

/// "What is the color of the object in the top left?": one object inside each quarter of the
/// image (clear of the middle lines by a quarter object size), four different colors, shapes
/// drawn freely. The quarter names the object, so a crop of that quarter shows it alone, while
/// answering from the whole image needs binding a position to an object.
fn quadrant(kind: Kind, p: &SceneParams, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (w, h) = (f64::from(p.width), f64::from(p.height));
    let mut colors = COLORS.to_vec();
    colors.shuffle(rng);
    let guard = p.object_size * 0.25;
    for (q, &color) in colors.iter().take(QUADRANTS.len()).enumerate() {
        let (x0, y0) = ((q % 2) as f64 * w / 2.0, (q / 2) as f64 * h / 2.0);
        let spread = (w.min(h) / 4.0 - guard).max(0.0);
        let shape = *SHAPES.choose(rng)?;
        let o = object(
            p,
            rng,
            shape,
            color,
            Some((x0 + w / 4.0, y0 + h / 4.0, spread)),
            &scene,
        )?;
        let [bx0, by0, bx1, by1] = o.bbox_px();
        let inside = bx0 >= x0 + guard
            && by0 >= y0 + guard
            && bx1 <= x0 + w / 2.0 - guard
            && by1 <= y0 + h / 2.0 - guard;
        if !inside {
            return None;
        }
        scene.objects.push(o);
    }
    let asked = rng.random_range(0..QUADRANTS.len());
    let target = scene.objects[asked];
    let (question, options, answer) = match kind {
        Kind::QuadrantWhere => (
            format!(
                "Which quarter of the image holds the {} object?",
                target.color.name()
            ),
            QUADRANTS.iter().map(|q| q.to_string()).collect(),
            asked,
        ),
        Kind::QuadrantColor => (
            format!(
                "What is the color of the object in the {}?",
                QUADRANTS[asked]
            ),
            COLORS.iter().map(|c| c.name().to_string()).collect(),
            COLORS.iter().position(|&c| c == target.color)?,
        ),
        _ => (
            format!(
                "What is the shape of the object in the {}?",
                QUADRANTS[asked]
            ),
            SHAPES.iter().map(|s| s.name().to_string()).collect(),
            SHAPES.iter().position(|&s| s == target.shape)?,
        ),
    };
    Some(Question {
        kind,
        scene,
        question,
        options,
        answer,
        focus: vec![target.bbox_px()],
    })
}

/// The box of each quarter of an image, normalized, in [`QUADRANTS`]' order.
pub const QUADRANT_BOXES: [[f64; 4]; 4] = [
    [0.0, 0.0, 0.5, 0.5],
    [0.5, 0.0, 1.0, 0.5],
    [0.0, 0.5, 0.5, 1.0],
    [0.5, 0.5, 1.0, 1.0],
];

/// "Which box is the top right quarter of the image?" with the four quarters' boxes as options,
/// written as a tool call's JSON writes them (`[0.5,0.0,1.0,0.5]`); the scene is one object.
fn quadrant_box(p: &SceneParams, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (shape, color) = (*SHAPES.choose(rng)?, *COLORS.choose(rng)?);
    let o = object(p, rng, shape, color, None, &scene)?;
    scene.objects.push(o);
    let asked = rng.random_range(0..QUADRANTS.len());
    Some(Question {
        kind: Kind::QuadrantBox,
        scene,
        question: format!(
            "Which normalized box [x1, y1, x2, y2] is the {} quarter of the image?",
            QUADRANTS[asked]
        ),
        options: QUADRANT_BOXES
            .iter()
            .map(|b| serde_json::json!(b).to_string())
            .collect(),
        answer: asked,
        focus: vec![o.bbox_px()],
    })
}

/// Two objects with descriptors (color + shape) no other object shares.
fn unique_pair(
    p: &SceneParams,
    layout: Layout,
    rng: &mut ChaCha8Rng,
    scene: &mut Scene,
    min_depth_gap: f64,
) -> Option<(Object, Object)> {
    let (sa, ca) = (*SHAPES.choose(rng)?, *COLORS.choose(rng)?);
    let (sb, cb) = loop {
        let pair = (*SHAPES.choose(rng)?, *COLORS.choose(rng)?);
        let differs = if layout.unique_colors {
            pair.1 != ca
        } else {
            pair != (sa, ca)
        };
        if differs {
            break pair;
        }
    };
    let a = object(p, rng, sa, ca, None, scene)?;
    scene.objects.push(a);
    let spread = if layout.near {
        p.object_size * 5.0
    } else {
        p.width.max(p.height) as f64
    };
    let mut b = object(p, rng, sb, cb, Some((a.cx, a.cy, spread)), scene)?;
    if (a.depth - b.depth).abs() < min_depth_gap {
        b.depth = if a.depth < 0.35 {
            a.depth + min_depth_gap
        } else {
            a.depth - min_depth_gap
        };
        b.size = sized(p, b.depth);
    }
    scene.objects.push(b);
    Some((a, b))
}

fn position(kind: Kind, p: &SceneParams, layout: Layout, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (a, b) = unique_pair(p, layout, rng, &mut scene, 0.0)?;
    // The asked-about offset must be clear: at least one object size.
    let (d, words) = match kind {
        Kind::Horizontal => (a.cx - b.cx, ["left", "right"]),
        _ => (a.cy - b.cy, ["above", "below"]),
    };
    if d.abs() < p.object_size {
        return None;
    }
    let answer = usize::from(d > 0.0);
    distract(&mut scene, p, layout, rng, |s, c| {
        (s, c) != (a.shape, a.color) && (s, c) != (b.shape, b.color)
    });
    let question = match kind {
        Kind::Horizontal => format!(
            "Is the {} to the left or to the right of the {}?",
            a.describe(),
            b.describe()
        ),
        _ => format!(
            "Is the {} above or below the {}?",
            a.describe(),
            b.describe()
        ),
    };
    Some(Question {
        kind,
        scene,
        question,
        options: words.map(String::from).to_vec(),
        answer,
        focus: vec![a.bbox_px(), b.bbox_px()],
    })
}

fn counting(p: &SceneParams, layout: Layout, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (shape, color) = (*SHAPES.choose(rng)?, *COLORS.choose(rng)?);
    let k = rng.random_range(1..=5usize);
    let (w, h) = (p.width as f64, p.height as f64);
    let m = p.object_size * 4.0;
    let center = (
        rng.random_range(m..(w - m).max(m + 1.0)),
        rng.random_range(m..(h - m).max(m + 1.0)),
    );
    let spread = p.object_size * 3.0;
    let mut box_px: Option<[f64; 4]> = None;
    for _ in 0..k {
        let o = object(
            p,
            rng,
            shape,
            color,
            Some((center.0, center.1, spread)),
            &scene,
        )?;
        box_px = Some(box_px.map_or(o.bbox_px(), |b| union(b, o.bbox_px())));
        scene.objects.push(o);
    }
    // Near misses inside the group (same shape or same color), then far distractors.
    for _ in 0..rng.random_range(1..=3) {
        let near_miss = if rng.random_bool(0.5) {
            let others: Vec<Color> = COLORS.iter().copied().filter(|&c| c != color).collect();
            (shape, *others.choose(rng)?)
        } else {
            let others: Vec<Shape> = SHAPES.iter().copied().filter(|&s| s != shape).collect();
            (*others.choose(rng)?, color)
        };
        if let Some(o) = object(
            p,
            rng,
            near_miss.0,
            near_miss.1,
            Some((center.0, center.1, spread)),
            &scene,
        ) {
            scene.objects.push(o);
        }
    }
    distract(&mut scene, p, layout, rng, |s, c| (s, c) != (shape, color));
    let (start, len) = if layout.canonical_options {
        (1, 5)
    } else {
        (rng.random_range(k.saturating_sub(3)..=k), 4)
    };
    let options: Vec<String> = (start..start + len).map(|n| n.to_string()).collect();
    Some(Question {
        kind: Kind::Counting,
        scene,
        question: format!(
            "How many {} {}s are there in the image?",
            color.name(),
            shape.name()
        ),
        options,
        answer: k - start,
        focus: vec![box_px?],
    })
}

fn depth(p: &SceneParams, layout: Layout, rng: &mut ChaCha8Rng) -> Option<Question> {
    let mut scene = Scene::background(p, rng);
    let (a, b) = unique_pair(p, layout, rng, &mut scene, 0.3)?;
    distract(&mut scene, p, layout, rng, |s, c| {
        (s, c) != (a.shape, a.color) && (s, c) != (b.shape, b.color)
    });
    if layout.canonical_options {
        return Some(Question {
            kind: Kind::Depth,
            scene,
            question: format!(
                "Is the {} closer to or farther from the camera than the {}?",
                a.describe(),
                b.describe()
            ),
            options: vec!["closer".into(), "farther".into()],
            answer: usize::from(a.depth > b.depth),
            focus: vec![a.bbox_px(), b.bbox_px()],
        });
    }
    let mut pair = [a, b];
    pair.shuffle(rng);
    let answer = usize::from(pair[1].depth < pair[0].depth);
    Some(Question {
        kind: Kind::Depth,
        scene,
        question: "Which object is closer to the camera?".into(),
        options: pair
            .iter()
            .map(|o| format!("the {}", o.describe()))
            .collect(),
        answer,
        focus: vec![pair[0].bbox_px(), pair[1].bbox_px()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params() -> SceneParams {
        SceneParams {
            width: 448,
            height: 448,
            object_size: 12.0,
            clutter: 10,
            noise: 8,
            plain: false,
            lit: false,
        }
    }

    /// Recomputes each answer from the scene alone (not from the generator's bookkeeping), with
    /// shuffled and with canonical options.
    #[test]
    fn answers_follow_from_the_scene() {
        for (seed, canonical) in (0..40).flat_map(|s| [(s, false), (s + 1000, true)]) {
            let layout = Layout {
                near: false,
                distractors: (4, 8),
                canonical_options: canonical,
                unique_colors: canonical,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for kind in Kind::ALL {
                let q = generate(kind, &params(), layout, &mut rng).unwrap();
                let objs = &q.scene.objects;
                if layout.unique_colors && kind != Kind::Counting {
                    let mut colors: Vec<&str> = objs.iter().map(|o| o.color.name()).collect();
                    colors.sort_unstable();
                    colors.dedup();
                    assert_eq!(colors.len(), objs.len(), "{}", q.question);
                }
                let ans = &q.options[q.answer];
                let named = |d: &str| -> Vec<&Object> {
                    objs.iter().filter(|o| d.ends_with(&o.describe())).collect()
                };
                match kind {
                    Kind::Color => {
                        let shape = q.question.trim_end_matches('?').rsplit(' ').next().unwrap();
                        let hits: Vec<_> =
                            objs.iter().filter(|o| o.shape.name() == shape).collect();
                        assert_eq!(hits.len(), 1, "{}", q.question);
                        assert_eq!(hits[0].color.name(), ans);
                        if canonical {
                            let all: Vec<&str> = COLORS.iter().map(|c| c.name()).collect();
                            assert_eq!(q.options, all);
                        }
                    }
                    Kind::ShapeOf => {
                        let color = q.question.split(' ').nth(6).unwrap();
                        let hits: Vec<_> =
                            objs.iter().filter(|o| o.color.name() == color).collect();
                        assert_eq!(hits.len(), 1, "{}", q.question);
                        assert_eq!(hits[0].shape.name(), ans);
                        if canonical {
                            let all: Vec<&str> = SHAPES.iter().map(|s| s.name()).collect();
                            assert_eq!(q.options, all);
                        }
                    }
                    Kind::Horizontal | Kind::Vertical => {
                        let rest = q
                            .question
                            .trim_start_matches("Is the ")
                            .trim_end_matches('?');
                        let (a, b) = rest
                            .split_once(if kind == Kind::Horizontal {
                                " to the left or to the right of the "
                            } else {
                                " above or below the "
                            })
                            .unwrap();
                        let (a, b) = (named(a), named(b));
                        assert_eq!((a.len(), b.len()), (1, 1), "{}", q.question);
                        let first = if kind == Kind::Horizontal {
                            a[0].cx < b[0].cx
                        } else {
                            a[0].cy < b[0].cy
                        };
                        assert_eq!(
                            ans,
                            if kind == Kind::Horizontal {
                                if first { "left" } else { "right" }
                            } else if first {
                                "above"
                            } else {
                                "below"
                            }
                        );
                    }
                    Kind::Counting => {
                        let words: Vec<&str> = q.question.split(' ').collect();
                        let (color, shape) = (words[2], words[3].trim_end_matches('s'));
                        let n = objs
                            .iter()
                            .filter(|o| o.color.name() == color && o.shape.name() == shape)
                            .count();
                        assert_eq!(ans, &n.to_string(), "{}", q.question);
                        assert_eq!(q.options.len(), if canonical { 5 } else { 4 });
                    }
                    Kind::Depth if canonical => {
                        let rest = q.question.trim_start_matches("Is the ");
                        let (a, b) = rest
                            .trim_end_matches('?')
                            .split_once(" closer to or farther from the camera than the ")
                            .unwrap();
                        let (a, b) = (named(a), named(b));
                        assert_eq!((a.len(), b.len()), (1, 1), "{}", q.question);
                        let expected = if a[0].depth < b[0].depth {
                            "closer"
                        } else {
                            "farther"
                        };
                        assert_eq!(ans, expected);
                    }
                    Kind::Region => {
                        let shape = q.question.trim_end_matches('?').rsplit(' ').next().unwrap();
                        let hits: Vec<_> =
                            objs.iter().filter(|o| o.shape.name() == shape).collect();
                        assert_eq!(hits.len(), 1, "{}", q.question);
                        let (col, row) = (hits[0].cx * 3.0 / 448.0, hits[0].cy * 3.0 / 448.0);
                        let expected = REGIONS[3 * row as usize + col as usize];
                        assert_eq!(ans, expected, "{}", q.question);
                        // Clear of the grid lines by a quarter object size.
                        for v in [col, row] {
                            let off = (v - v.floor()) * 448.0 / 3.0;
                            assert!((3.0 - 1e-9..=448.0 / 3.0 - 3.0 + 1e-9).contains(&off));
                        }
                        assert_eq!(q.options.len(), 9);
                    }
                    Kind::QuadrantColor | Kind::QuadrantShape => {
                        assert_eq!(objs.len(), 4);
                        let named = q
                            .question
                            .trim_end_matches('?')
                            .split(" in the ")
                            .nth(1)
                            .unwrap();
                        let quarter = QUADRANTS.iter().position(|n| *n == named).unwrap();
                        let inside: Vec<_> = objs
                            .iter()
                            .filter(|o| {
                                let [x0, y0, x1, y1] = o.bbox_px();
                                let (qx, qy) =
                                    ((quarter % 2) as f64 * 224.0, (quarter / 2) as f64 * 224.0);
                                x0 >= qx && x1 <= qx + 224.0 && y0 >= qy && y1 <= qy + 224.0
                            })
                            .collect();
                        assert_eq!(inside.len(), 1, "{}", q.question);
                        let want = if kind == Kind::QuadrantColor {
                            inside[0].color.name()
                        } else {
                            inside[0].shape.name()
                        };
                        assert_eq!(ans, want, "{}", q.question);
                    }
                    Kind::QuadrantWhere => {
                        assert_eq!(objs.len(), 4);
                        let color = q.question.split(" holds the ").nth(1).unwrap();
                        let color = color.trim_end_matches(" object?");
                        let hits: Vec<_> =
                            objs.iter().filter(|o| o.color.name() == color).collect();
                        assert_eq!(hits.len(), 1, "{}", q.question);
                        let [x0, y0, x1, y1] = hits[0].bbox_px();
                        let quarter = QUADRANTS.iter().position(|n| n == ans).unwrap();
                        let (qx, qy) = ((quarter % 2) as f64 * 224.0, (quarter / 2) as f64 * 224.0);
                        assert!(x0 >= qx && x1 <= qx + 224.0 && y0 >= qy && y1 <= qy + 224.0);
                        assert_eq!(q.options.len(), 4);
                    }
                    Kind::QuadrantBox => {
                        let named = q.question.split(" is the ").nth(1).unwrap();
                        let quarter = QUADRANTS
                            .iter()
                            .position(|n| named.starts_with(&format!("{n} quarter")))
                            .unwrap();
                        assert_eq!(q.answer, quarter);
                        assert_eq!(ans, &serde_json::json!(QUADRANT_BOXES[quarter]).to_string());
                    }
                    Kind::Depth => {
                        let (a, b) = (named(&q.options[0]), named(&q.options[1]));
                        assert_eq!((a.len(), b.len()), (1, 1));
                        let closer = if a[0].depth < b[0].depth { 0 } else { 1 };
                        assert_eq!(q.answer, closer);
                        assert!((a[0].depth - b[0].depth).abs() >= 0.3 - 1e-9);
                    }
                }
                for f in &q.focus {
                    assert!(
                        f[0] >= 0.0 && f[2] <= 448.0 && f[1] >= 0.0 && f[3] <= 448.0,
                        "{f:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn impossible_layouts_fail_with_a_clear_error() {
        let p = SceneParams {
            width: 40,
            height: 40,
            object_size: 30.0,
            clutter: 0,
            noise: 0,
            plain: false,
            lit: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let e = generate(
            Kind::Counting,
            &p,
            Layout {
                near: true,
                distractors: (0, 0),
                canonical_options: false,
                unique_colors: false,
            },
            &mut rng,
        )
        .unwrap_err();
        assert!(e.to_string().contains("enlarge the scene"), "{e}");
    }
}
