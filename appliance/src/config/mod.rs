//! Desired configuration: the TOML schema users write (`schema`), the typed
//! model every subsystem reads (`model`), the one validator that turns the
//! first into the second (`validate`), where in a file a
//! problem lies (`locate`), and what changed between two configs (`diff`).
//!
//! Invariant: a `Config` value has passed `validate`; nothing else builds one.
//! Errors name file, line, column and field, and say how to fix the value.

pub mod diff;
mod locate;
pub(crate) mod model;
pub(crate) mod path;
pub(crate) mod schema;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use diff::{ConfigDiff, diff};
pub use model::*;
pub use schema::*;
pub use validate::validate;

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Problems(.problems, .file))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub(crate) fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

/// One problem, located in the source text when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in a text (e.g. JSON input).
    pub line: usize,
    pub column: usize,
    /// Dotted path such as `pool[0].member[1].name`; `None` for syntax errors.
    pub field: Option<String>,
    pub message: String,
}

struct Problems<'a>(&'a [Problem], &'a str);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: ", self.1, problem.line, problem.column)?;
            if let Some(field) = &problem.field {
                write!(f, "{field}: ")?;
            }
            f.write_str(&problem.message)?;
        }
        Ok(())
    }
}

/// Parse and validate TOML text. `file` is only used in messages.
pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let parsed: ConfigFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(error) => return Err(invalid(vec![locate::toml_error(text, &error)])),
    };
    validate(&parsed).map_err(|errors| {
        invalid(
            errors
                .iter()
                .map(|error| locate::field_error(text, error))
                .collect(),
        )
    })
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    from_toml(&text, &file)
}

/// Parse and validate a JSON config. Syntax errors come back as one
/// problem without a field (and with its line and column); a value of the
/// wrong type, or an unknown field, as one problem naming the field (empty
/// for the top level); validation errors name their fields. JSON problems
/// of fields have no line (0). `file` is only used in messages.
pub(crate) fn from_json(body: &[u8], file: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: ConfigFile = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(parsed) => parsed,
        Err(error) => {
            let field = error.path().to_string();
            let inner = error.into_inner();
            let problem = if inner.is_syntax() || inner.is_eof() {
                Problem {
                    line: inner.line(),
                    column: inner.column(),
                    field: None,
                    message: inner.to_string(),
                }
            } else {
                Problem {
                    line: 0,
                    column: 0,
                    field: Some(if field == "." { String::new() } else { field }),
                    message: inner.to_string(),
                }
            };
            return Err(invalid(vec![problem]));
        }
    };
    validate(&parsed).map_err(|errors| invalid(unlocated(errors)))
}

/// Field errors as problems without a place in a text.
fn unlocated(errors: Vec<FieldError>) -> Vec<Problem> {
    errors
        .into_iter()
        .map(|error| Problem {
            line: 0,
            column: 0,
            field: Some(error.path.to_string()),
            message: error.message,
        })
        .collect()
}

/// Field errors found outside the validator (against the host's
/// interfaces), in the form a validation failure takes.
pub(crate) fn host_problems(errors: Vec<FieldError>) -> ConfigError {
    ConfigError::Invalid {
        file: "upload".to_owned(),
        problems: unlocated(errors),
    }
}

/// The TOML form of a config, accepted again by `from_toml`.
pub(crate) fn to_toml(config: &Config) -> String {
    file_to_toml(config.source())
}

/// The TOML form of a config file (a validated config's source, perhaps
/// with admin states set): serialising never fails for a `ConfigFile`.
pub(crate) fn file_to_toml(file: &ConfigFile) -> String {
    toml::to_string(file).expect("every ConfigFile value is representable in TOML")
}

/// Set each member's `state` in `file` to its admin state in `admin`, where
/// it has one: what an export carries, so that importing it restores a
/// drain that was in progress.
pub(crate) fn set_admin_states(
    file: &mut ConfigFile,
    admin: &std::collections::BTreeMap<MemberKey, AdminState>,
) {
    for pool in &mut file.pools {
        for member in &mut pool.members {
            if let Some(state) = admin.get(&(pool.name.clone(), member.name.clone())) {
                member.state = *state;
            }
        }
    }
}

#[cfg(test)]
mod tests;
