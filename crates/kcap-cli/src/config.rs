//! The experiment file's schema (serde structs) and positions in its text.
//!
//! Design decision: parsing happens in two passes. Serde, with
//! `deny_unknown_fields` on every table and [`toml::Spanned`] around every
//! value that is checked for *meaning*, does the syntax and the types; then
//! [`crate::plan`] checks the meaning (names, ranges, which areas have
//! winners when) and resolves the schedule. Both passes report through
//! [`Diagnostic`], which turns a byte span into `file:line:column` plus the
//! offending source line, so every config error points at its place. The
//! format itself is documented in `docs/experiment-format.md`.

use kcap::{EngineKind, TailSampler};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use toml::Spanned;

/// A whole experiment file, as written (before any semantic check).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// Name of the experiment (default: the file name without `.toml`).
    pub name: Option<Spanned<String>>,
    /// Free text, echoed into the results.
    pub description: Option<String>,
    /// Brain-wide parameters.
    pub brain: Spanned<RawBrain>,
    /// The areas, in declaration order.
    #[serde(default)]
    pub area: Vec<Spanned<RawArea>>,
    /// The stimuli.
    #[serde(default)]
    pub stimulus: Vec<Spanned<RawStimulus>>,
    /// Per-fiber overrides of p and beta.
    #[serde(default)]
    pub fiber: Vec<Spanned<RawFiber>>,
    /// The schedule, run in order.
    #[serde(default)]
    pub step: Vec<Spanned<RawStep>>,
}

/// `[brain]`: connection probability, seed and global switches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBrain {
    /// Global connection probability, in (0, 1].
    pub p: Spanned<f64>,
    /// Seed of every random draw (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Optional cap on every synaptic weight (≥ 1).
    pub w_max: Option<Spanned<f64>>,
    /// Brain-wide plasticity switch at the start (default true).
    pub plasticity: Option<bool>,
    /// How the lazy engine draws the k best never-fired inputs.
    pub tail: Option<TailSampler>,
    /// Default for every area's `save_winners` (default false).
    pub save_winners: Option<bool>,
    /// Default storage format of fibers between explicit areas.
    pub format: Option<Spanned<RawFormat>>,
    /// Where the run computes: "cpu" (default), "cuda" or "cuda:N".
    pub device: Option<Spanned<String>>,
}

/// `[[area]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawArea {
    pub name: Spanned<String>,
    /// Number of neurons.
    pub n: Spanned<u64>,
    /// Winners per step, 1 ≤ k < n.
    pub k: Spanned<u64>,
    /// Default plasticity of synapses into the area (≥ 0).
    pub beta: Spanned<f64>,
    /// Connectivity engine (default lazy).
    pub engine: Option<Spanned<EngineKind>>,
    /// Write this area's winners into the results at every step.
    pub save_winners: Option<bool>,
}

/// `[[stimulus]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStimulus {
    pub name: Spanned<String>,
    /// Number of neurons that fire together.
    pub size: Spanned<u64>,
}

/// `[[fiber]]`: overrides for the fiber `from → to`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiber {
    /// Source: a stimulus or an area.
    pub from: Spanned<String>,
    /// Target: an area.
    pub to: Spanned<String>,
    pub p: Option<Spanned<f64>>,
    pub beta: Option<Spanned<f64>>,
    /// Storage format of this fiber (both ends explicit areas).
    pub format: Option<Spanned<RawFormat>>,
}

/// A storage format: `"auto"`, `"reference"`, or a table of its parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RawFormat {
    Named(String),
    Parts(RawFormatParts),
}

/// `format = { weights, indices, layout, rounding, accumulator }`; each
/// part defaults to the f32 reference's.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFormatParts {
    pub weights: Option<Spanned<String>>,
    pub indices: Option<Spanned<String>>,
    pub layout: Option<Spanned<String>>,
    pub rounding: Option<Spanned<String>>,
    pub accumulator: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFormat;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", \"reference\" or a table { weights, indices, layout, rounding, accumulator }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawFormat, E> {
                Ok(RawFormat::Named(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawFormat, A::Error> {
                RawFormatParts::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(RawFormat::Parts)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[step]]`: actions, then `fire` performed `repeat` times.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Shown in the progress bar, the results and error messages.
    pub label: Option<String>,
    /// How many projection steps `fire` is performed (default 1, ≥ 1).
    pub repeat: Option<Spanned<u64>>,
    /// Turn the brain-wide plasticity switch on or off.
    pub plasticity: Option<bool>,
    /// Change beta of fibers.
    #[serde(default)]
    pub set_beta: OneOrMany<RawSetBeta>,
    /// Areas to unfix.
    #[serde(default)]
    pub unfix: Vec<Spanned<String>>,
    /// Areas to fix (they keep their winners when projected into).
    #[serde(default)]
    pub fix: Vec<Spanned<String>>,
    /// Set winners to assembly `index` and fix them.
    #[serde(default)]
    pub activate: OneOrMany<RawActivate>,
    /// Keep a random fraction of an area's winners.
    #[serde(default)]
    pub subsample: OneOrMany<RawSubsample>,
    /// `source = [targets]`: who fires into whom in each projection step.
    pub fire: Option<Spanned<FireMap>>,
}

/// `fire = { source = [targets], ... }`, with the position of every name.
pub type FireMap = BTreeMap<Spanned<String>, Vec<Spanned<String>>>;

/// `set_beta = { from, to, beta }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetBeta {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub beta: Spanned<f64>,
}

/// `activate = { area, index }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawActivate {
    pub area: Spanned<String>,
    pub index: Spanned<u64>,
}

/// `subsample = { area, fraction }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubsample {
    pub area: Spanned<String>,
    pub fraction: Spanned<f64>,
}

/// One inline table or an array of them (`x = {..}` or `x = [{..}, {..}]`).
///
/// Written by hand rather than with `#[serde(untagged)]`, which would buffer
/// the value and lose both the spans and the precise error messages.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an inline table or an array of inline tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Vec<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| vec![t])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Vec<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element()? {
                    v.push(x);
                }
                Ok(v)
            }
        }
        d.deserialize_any(V(PhantomData)).map(OneOrMany)
    }
}

/// The text of an experiment file and the name to show for it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// As given on the command line (or `examples/NAME.toml (built in)`).
    pub display: String,
    pub text: String,
}

impl SourceFile {
    /// 1-based (line, column) of a byte offset; column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    /// A diagnostic at a byte span of this file.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.line_col(span.start);
        Diagnostic {
            file: self.display.clone(),
            line: Some(line),
            col: Some(col),
            message: message.into(),
            snippet: Some(self.line_text(line).to_string()),
        }
    }

    /// A diagnostic that concerns the whole file.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.display.clone(),
            line: None,
            col: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// Parses the text with serde; a parse error becomes a diagnostic with
    /// the toml crate's position and message.
    pub fn parse(&self) -> Result<RawExperiment, Diagnostic> {
        toml::from_str::<RawExperiment>(&self.text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => self.error_at(span, msg),
                None => self.error(msg),
            }
        })
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One config error: where (file, line, column) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    /// The source line, shown under the message.
    pub snippet: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            _ => write!(f, "{}: {}", self.file, self.message)?,
        }
        if let (Some(l), Some(s)) = (self.line, &self.snippet) {
            if !s.trim().is_empty() {
                write!(f, "\n{l:>6} | {s}")?;
            }
        }
        Ok(())
    }
}

/// All config errors found in one file (at least one). Exit code 2.
#[derive(Debug, Clone)]
pub struct ConfigError(pub Vec<Diagnostic>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for (i, d) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("\nerror: ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "\n... and {} more errors", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<Diagnostic> for ConfigError {
    fn from(d: Diagnostic) -> Self {
        ConfigError(vec![d])
    }
}

/// A usage error that is not tied to a file position (unwritable output
/// folder, unknown bench scenario, ...). Exit code 2.
#[derive(Debug, Clone)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> SourceFile {
        SourceFile {
            display: "t.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn line_and_column_of_offsets() {
        let s = src("a = 1\nbé = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(9), (2, 3)); // after the two-byte é
        assert_eq!(s.line_col(1000), (3, 1));
    }

    #[test]
    fn spans_of_keys_values_and_one_or_many() {
        let s = src(
            "[brain]\np = 0.5\n[[area]]\nname = \"A\"\nn = 10\nk = 2\nbeta = 0.1\n\
             [[step]]\nactivate = { area = \"A\", index = 0 }\nfire = { A = [\"A\"] }\n\
             [[step]]\nset_beta = [{ from = \"A\", to = \"A\", beta = 0.0 }, { from = \"A\", to = \"A\", beta = 1.0 }]\n",
        );
        let raw = s.parse().unwrap();
        assert_eq!(s.line_col(raw.brain.get_ref().p.span().start).0, 2);
        assert_eq!(s.line_col(raw.area[0].get_ref().k.span().start).0, 6);
        let st = raw.step[0].get_ref();
        assert_eq!(st.activate.0.len(), 1);
        assert_eq!(s.line_col(st.activate.0[0].area.span().start).0, 9);
        let (key, targets) = st.fire.as_ref().unwrap().get_ref().iter().next().unwrap();
        assert_eq!(s.line_col(key.span().start), (10, 10));
        assert_eq!(s.line_col(targets[0].span().start).0, 10);
        assert_eq!(raw.step[1].get_ref().set_beta.0.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let s = src("[brain]\np = 0.5\n\n[[area]]\nname = \"A\"\nnn = 10\n");
        let e = s.parse().unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("unknown field `nn`"), "{e}");
        let s = src("[brain]\np = 0.5\n[[step]]\nactivate = { area = \"A\", idx = 0 }\n");
        let e = s.parse().unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("unknown field `idx`"), "{e}");
    }
}
