//! Pipelines: data-flow graphs declared in TOML or JSON, each vertex a lambda on a prefix
//! whose output reaches its destinations by put or trigger.
//!
//! ```toml
//! name = "farm"
//! [[vertex]]
//! name = "filter"
//! prefix = "/farm/frames"
//! kind = "forward"
//! destinations = [{ prefix = "/farm/scored", mode = "trigger" }]
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lambda::{BindingSpec, Destination};

/// One stage of a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// The stage's name, unique in its pipeline.
    pub name: String,
    /// The prefix whose versions it receives.
    pub prefix: String,
    /// The registered lambda kind that runs it.
    pub kind: String,
    /// The kind's config.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where its output goes.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// A whole pipeline, as loaded and stored under `/kascade/pipelines`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// The pipeline's name.
    pub name: String,
    /// Its stages.
    #[serde(rename = "vertex", alias = "vertices")]
    pub vertices: Vec<Vertex>,
}

impl PipelineSpec {
    /// Parses a JSON (starting with `{`) or TOML description.
    pub fn parse(text: &str) -> Result<PipelineSpec> {
        let spec: PipelineSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Error::Pipeline(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| Error::Pipeline(e.to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks names are usable and unique.
    pub fn validate(&self) -> Result<()> {
        check_name(&self.name).map_err(Error::Pipeline)?;
        if self.vertices.is_empty() {
            return Err(Error::Pipeline(format!(
                "pipeline {:?} has no vertex",
                self.name
            )));
        }
        let mut names = std::collections::HashSet::new();
        for v in &self.vertices {
            check_name(&v.name).map_err(Error::Pipeline)?;
            if !names.insert(&v.name) {
                return Err(Error::Pipeline(format!(
                    "vertex {:?} appears twice",
                    v.name
                )));
            }
        }
        Ok(())
    }

    /// The bindings that run this pipeline, one per vertex, named `<pipeline>.<vertex>`.
    pub fn bindings(&self) -> Vec<BindingSpec> {
        self.vertices
            .iter()
            .map(|v| BindingSpec {
                name: format!("{}.{}", self.name, v.name),
                prefix: v.prefix.clone(),
                kind: v.kind.clone(),
                config: v.config.clone(),
                destinations: v.destinations.clone(),
            })
            .collect()
    }
}

/// Checks a binding or pipeline name: letters, digits, `-`, `_`, `.`; 1 to 128 bytes.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1-128 letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_describe_the_same_pipeline() {
        let toml = r#"
            name = "farm"
            [[vertex]]
            name = "filter"
            prefix = "/farm/frames"
            kind = "forward"
            destinations = [{ prefix = "/farm/scored", mode = "trigger" }]
        "#;
        let json = r#"{"name":"farm","vertex":[{"name":"filter","prefix":"/farm/frames","kind":"forward",
            "destinations":[{"prefix":"/farm/scored","mode":"trigger"}]}]}"#;
        let a = PipelineSpec::parse(toml).unwrap();
        assert_eq!(a, PipelineSpec::parse(json).unwrap());
        assert_eq!(a.bindings()[0].name, "farm.filter");
        assert!(PipelineSpec::parse("name = \"x\"\nvertex = []").is_err());
    }
}
