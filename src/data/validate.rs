//! Validation of trajectory files: every problem with file, line and reason, and a summary.
//! `pearl data validate` prints the report; training calls `load_validated`, which refuses invalid
//! data or, with `skip_invalid`, drops it and says how much (nothing is dropped silently).

use crate::data::chat::{ImageSource, Part, Role};
use crate::data::trajectory::{Numbered, Trajectory, TrajectoryFile, base_dir_of};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// When set, every image path must lie inside this directory.
    pub root: Option<PathBuf>,
    /// Fully decode every image (not just its header). Slower, catches truncated files.
    pub decode_images: bool,
    /// Largest accepted image side and pixel count (guards against decompression bombs).
    pub max_side: u32,
    pub max_pixels: u64,
    /// For `load_validated`: drop invalid examples (counted) instead of refusing the data.
    pub skip_invalid: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        Self {
            root: None,
            decode_images: true,
            max_side: 16_384,
            max_pixels: 100_000_000,
            skip_invalid: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    Unreadable,
    BadJson,
    BadSchema,
    UnknownRole,
    DuplicateId,
    Structure,
    NoImageInFirstUserTurn,
    NoAssistantTurn,
    EmptyText,
    MissingImage,
    UndecodableImage,
    ImageSize,
    ImageOutsideRoot,
    BadBbox,
    BadToolCall,
    ToolCallMarkup,
}

impl ProblemKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable file",
            ProblemKind::BadJson => "bad JSON",
            ProblemKind::BadSchema => "wrong fields or types",
            ProblemKind::UnknownRole => "unknown role",
            ProblemKind::DuplicateId => "duplicate id",
            ProblemKind::Structure => "bad turn structure",
            ProblemKind::NoImageInFirstUserTurn => "no image in the first user turn",
            ProblemKind::NoAssistantTurn => "no assistant turn",
            ProblemKind::EmptyText => "empty text",
            ProblemKind::MissingImage => "missing image",
            ProblemKind::UndecodableImage => "undecodable image",
            ProblemKind::ImageSize => "zero or absurd image size",
            ProblemKind::ImageOutsideRoot => "image outside the dataset root",
            ProblemKind::BadBbox => "bbox outside [0, 1] or empty",
            ProblemKind::BadToolCall => "bad tool call",
            ProblemKind::ToolCallMarkup => "tool-call markup in message text",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line; 0 for a problem with the whole file.
    pub line: usize,
    pub id: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(id) = &self.id {
            write!(f, "[{id}] ")?;
        }
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: usize,
    /// Non-blank lines seen.
    pub examples: usize,
    pub valid: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn invalid(&self) -> usize {
        self.examples - self.valid
    }
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    /// `N examples in F files: V valid, I invalid` and one line per problem kind with its count.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} examples in {} file(s): {} valid, {} invalid, {} problem(s)",
            self.examples,
            self.files,
            self.valid,
            self.invalid(),
            self.problems.len()
        );
        let mut by_kind: BTreeMap<ProblemKind, usize> = BTreeMap::new();
        for p in &self.problems {
            *by_kind.entry(p.kind).or_default() += 1;
        }
        for (k, n) in by_kind {
            s.push_str(&format!("\n  {n:>7}  {}", k.as_str()));
        }
        s
    }
}

/// Validates `paths`; returns the valid examples of each file and the full report.
pub fn validate_files(paths: &[PathBuf], opts: &ValidateOptions) -> (Vec<TrajectoryFile>, Report) {
    let mut report = Report::default();
    let mut cache = ImageCache::default();
    let root = opts.root.as_ref().map(|r| normalize(r));
    let mut files = Vec::new();
    for path in paths {
        report.files += 1;
        let items = validate_file(path, opts, root.as_deref(), &mut cache, &mut report);
        files.push(TrajectoryFile {
            path: path.clone(),
            base_dir: base_dir_of(path),
            items,
        });
    }
    (files, report)
}

/// Training's entry point: valid examples, or an error listing the problems unless `skip_invalid`.
pub fn load_validated(
    paths: &[PathBuf],
    opts: &ValidateOptions,
) -> anyhow::Result<(Vec<TrajectoryFile>, Report)> {
    let (files, report) = validate_files(paths, opts);
    if !report.is_clean() && !opts.skip_invalid {
        let shown: Vec<String> = report
            .problems
            .iter()
            .take(20)
            .map(|p| p.to_string())
            .collect();
        anyhow::bail!(
            "invalid training data (use --skip-invalid to drop the invalid examples):\n{}\n{}",
            shown.join("\n"),
            report.summary()
        );
    }
    if report.valid == 0 {
        anyhow::bail!(
            "no valid examples in {} file(s)\n{}",
            report.files,
            report.summary()
        );
    }
    Ok((files, report))
}

fn validate_file(
    path: &Path,
    opts: &ValidateOptions,
    root: Option<&Path>,
    cache: &mut ImageCache,
    report: &mut Report,
) -> Vec<Numbered> {
    let file_problem = |kind, message: String| Problem {
        file: path.to_path_buf(),
        line: 0,
        id: None,
        kind,
        message,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report.problems.push(file_problem(
                ProblemKind::Unreadable,
                format!("cannot open: {e}"),
            ));
            return Vec::new();
        }
    };
    let base_dir = base_dir_of(path);
    let mut seen_ids = HashSet::new();
    let mut valid = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                report.problems.push(Problem {
                    line: line_no,
                    ..file_problem(ProblemKind::Unreadable, format!("cannot read line: {e}"))
                });
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        report.examples += 1;
        let mut found = Vec::new();
        let parsed = parse_line(&line, &mut found);
        if let Some(t) = &parsed {
            if !seen_ids.insert(t.id.clone()) {
                found.push((
                    ProblemKind::DuplicateId,
                    format!("id {:?} already used earlier in this file", t.id),
                ));
            }
            check_trajectory(t, &base_dir, opts, root, cache, &mut found);
        }
        let id = parsed.as_ref().map(|t| t.id.clone());
        match (parsed, found.is_empty()) {
            (Some(trajectory), true) => {
                report.valid += 1;
                valid.push(Numbered {
                    line: line_no,
                    trajectory,
                });
            }
            _ => report
                .problems
                .extend(found.into_iter().map(|(kind, message)| Problem {
                    file: path.to_path_buf(),
                    line: line_no,
                    id: id.clone(),
                    kind,
                    message,
                })),
        }
    }
    valid
}

/// JSON, then roles (serde's message for an unknown enum variant does not say which message),
/// then the typed schema.
fn parse_line(line: &str, found: &mut Vec<(ProblemKind, String)>) -> Option<Trajectory> {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            found.push((ProblemKind::BadJson, e.to_string()));
            return None;
        }
    };
    if let Some(messages) = value.get("messages").and_then(|m| m.as_array()) {
        for (i, m) in messages.iter().enumerate() {
            if let Some(role) = m.get("role").and_then(|r| r.as_str())
                && !matches!(role, "system" | "user" | "assistant" | "tool")
            {
                found.push((
                    ProblemKind::UnknownRole,
                    format!("message {i} has role {role:?}"),
                ));
            }
        }
    }
    if !found.is_empty() {
        return None;
    }
    match serde_json::from_value(value) {
        Ok(t) => Some(t),
        Err(e) => {
            found.push((ProblemKind::BadSchema, e.to_string()));
            None
        }
    }
}

fn check_trajectory(
    t: &Trajectory,
    base_dir: &Path,
    opts: &ValidateOptions,
    root: Option<&Path>,
    cache: &mut ImageCache,
    found: &mut Vec<(ProblemKind, String)>,
) {
    if t.id.trim().is_empty() {
        found.push((ProblemKind::BadSchema, "empty id".into()));
    }
    check_structure(t, found);
    for (i, m) in t.messages.iter().enumerate() {
        if m.content.is_empty() {
            found.push((
                ProblemKind::EmptyText,
                format!("message {i} ({}) has no content", m.role.as_str()),
            ));
        }
        for p in &m.content {
            match p {
                Part::Text { text } if text.trim().is_empty() => found.push((
                    ProblemKind::EmptyText,
                    format!("message {i} ({}) has an empty text part", m.role.as_str()),
                )),
                // Every turn, the system prompt included: calls belong in meta.tool_calls.
                Part::Text { text } if text.contains("<tool_call>") || text.contains("</tool_call>") => {
                    found.push((
                        ProblemKind::ToolCallMarkup,
                        format!(
                            "message {i} ({}) holds <tool_call> markup (calls belong in meta.tool_calls)",
                            m.role.as_str()
                        ),
                    ))
                }
                Part::Image { image } => {
                    if let Err((kind, msg)) = check_image(image, base_dir, opts, root, cache) {
                        found.push((kind, format!("message {i}: {msg}")));
                    }
                }
                _ => {}
            }
        }
    }
    check_tool_calls(t, found);
}

fn check_structure(t: &Trajectory, found: &mut Vec<(ProblemKind, String)>) {
    let first_non_system = t.messages.iter().position(|m| m.role != Role::System);
    match first_non_system.map(|i| &t.messages[i]) {
        None => found.push((ProblemKind::Structure, "no user turn".into())),
        Some(m) if m.role != Role::User => found.push((
            ProblemKind::Structure,
            format!(
                "first turn after the system prompt is {}, not user",
                m.role.as_str()
            ),
        )),
        Some(m) if m.images().next().is_none() => found.push((
            ProblemKind::NoImageInFirstUserTurn,
            "the first user turn holds no image".into(),
        )),
        _ => {}
    }
    if !t.messages.iter().any(|m| m.role == Role::Assistant) {
        found.push((
            ProblemKind::NoAssistantTurn,
            "no assistant turn to learn from".into(),
        ));
    } else if t.messages.last().is_some_and(|m| m.role != Role::Assistant) {
        found.push((
            ProblemKind::Structure,
            "the last turn is not an assistant turn".into(),
        ));
    }
}

fn check_tool_calls(t: &Trajectory, found: &mut Vec<(ProblemKind, String)>) {
    for (k, call) in t.meta.tool_calls.iter().enumerate() {
        let what = format!("tool call {k} ({})", call.name);
        match t.messages.get(call.turn) {
            None => {
                found.push((
                    ProblemKind::BadToolCall,
                    format!(
                        "{what} names turn {} but there are {} messages",
                        call.turn,
                        t.messages.len()
                    ),
                ));
                continue;
            }
            Some(m) if m.role != Role::Assistant => {
                found.push((
                    ProblemKind::BadToolCall,
                    format!(
                        "{what} is in turn {}, a {} turn",
                        call.turn,
                        m.role.as_str()
                    ),
                ));
            }
            _ => {}
        }
        let output = t.messages.get(call.turn + 1);
        if output.is_none_or(|m| m.images().next().is_none()) {
            found.push((
                ProblemKind::BadToolCall,
                format!("{what}: the turn after it holds no output image"),
            ));
        }
        if let Some(b) = call.bbox() {
            match b.and_then(|b| crate::tools::crop::pixel_box(b, 1 << 20, 1 << 20).map(|_| b)) {
                Ok(_) => {}
                Err(e) => found.push((ProblemKind::BadBbox, format!("{what}: {e}"))),
            }
        }
        if let Some(target) = call.target_image() {
            let available = t.images_before(call.turn);
            match target {
                Ok(i) if i <= available => {}
                Ok(i) => found.push((
                    ProblemKind::BadToolCall,
                    format!(
                        "{what} targets image {i} but only {available} image(s) precede turn {}",
                        call.turn
                    ),
                )),
                Err(e) => found.push((ProblemKind::BadToolCall, format!("{what}: {e}"))),
            }
        }
    }
}

/// An image's size, or the problem with it.
type ImageVerdict = Result<(u32, u32), (ProblemKind, String)>;

/// Image verdicts by resolved path: datasets reuse one image across many lines.
#[derive(Default)]
struct ImageCache(HashMap<PathBuf, ImageVerdict>);

fn check_image(
    reference: &str,
    base_dir: &Path,
    opts: &ValidateOptions,
    root: Option<&Path>,
    cache: &mut ImageCache,
) -> ImageVerdict {
    let source = ImageSource::resolve(reference, base_dir)
        .map_err(|e| (ProblemKind::UndecodableImage, e.to_string()))?;
    match source {
        ImageSource::Inline(bytes) => inspect_image(
            || {
                Ok(image::ImageReader::new(std::io::Cursor::new(
                    bytes.as_slice(),
                )))
            },
            "inline image",
            opts,
        ),
        ImageSource::Path(path) => {
            let resolved = normalize(&path);
            if let Some(root) = root
                && !resolved.starts_with(root)
            {
                return Err((
                    ProblemKind::ImageOutsideRoot,
                    format!("{} is outside {}", resolved.display(), root.display()),
                ));
            }
            if let Some(v) = cache.0.get(&resolved) {
                return v.clone();
            }
            let verdict = inspect_image(
                || image::ImageReader::open(&resolved),
                &resolved.display().to_string(),
                opts,
            );
            cache.0.insert(resolved, verdict.clone());
            verdict
        }
    }
}

/// Dimensions from the header, size limits, then (optionally) a full decode under the same limits.
/// `open` is called once per pass because reading the header consumes the reader.
fn inspect_image<R: std::io::BufRead + std::io::Seek>(
    open: impl Fn() -> std::io::Result<image::ImageReader<R>>,
    name: &str,
    opts: &ValidateOptions,
) -> ImageVerdict {
    let undecodable = |e: String| (ProblemKind::UndecodableImage, format!("{name}: {e}"));
    let reader = || -> Result<image::ImageReader<R>, (ProblemKind, String)> {
        let r = open()
            .map_err(|e| (ProblemKind::MissingImage, format!("{name}: {e}")))?
            .with_guessed_format()
            .map_err(|e| undecodable(e.to_string()))?;
        if r.format().is_none() {
            return Err(undecodable("not a known image format".into()));
        }
        Ok(r)
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| undecodable(e.to_string()))?;
    if w == 0
        || h == 0
        || w > opts.max_side
        || h > opts.max_side
        || (w as u64) * (h as u64) > opts.max_pixels
    {
        return Err((
            ProblemKind::ImageSize,
            format!(
                "{name} is {w}x{h} (accepted: 1..={} per side, at most {} pixels)",
                opts.max_side, opts.max_pixels
            ),
        ));
    }
    if opts.decode_images {
        let mut r = reader()?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(opts.max_side);
        limits.max_image_height = Some(opts.max_side);
        r.limits(limits);
        r.decode().map_err(|e| undecodable(e.to_string()))?;
    }
    Ok((w, h))
}

/// Absolute, with `.`/`..` resolved; symlinks resolved too when the path exists.
fn normalize(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
