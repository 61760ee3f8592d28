//! Closed sets of words written as strings in documents (`"START"`, `"SUCCEEDED"`, `"train"`).
//!
//! Parsing is lenient: an unknown word is kept as `Unknown(word)` so that validation can report
//! it with its location together with every other problem, instead of serde stopping at the
//! first one. The JSON Schema lists only the known words.

/// Defines a string enum with lenient parsing, `Display`, serde and a JSON Schema.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A word that is not one of the known ones (reported by validation).
            Unknown(String),
        }

        impl $name {
            /// Every known word, in declaration order.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            /// The word as written in documents.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Unknown(s) => s.as_str(),
                }
            }

            /// `true` unless this is [`Self::Unknown`].
            #[must_use]
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Unknown(_))
            }

            /// Parses a word; unknown words become [`Self::Unknown`].
            #[must_use]
            pub fn parse(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )+
                    other => Self::Unknown(other.to_string()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match Self::parse(s) {
                    Self::Unknown(w) => Err(format!(
                        "unknown {} {w:?}, expected one of {}",
                        stringify!($name).to_lowercase(),
                        Self::KNOWN.join(", ")
                    )),
                    known => Ok(known),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": [$($text),+] })
            }
        }
    };
}

string_enum! {
    /// The ML operation a node performs.
    Op {
        ReadDataset = "read_dataset",
        WriteDataset = "write_dataset",
        Ingest = "ingest",
        Transform = "transform",
        Train = "train",
        Evaluate = "evaluate",
        Validate = "validate",
        Push = "push",
        Predict = "predict",
        /// Anything else the user's command does.
        Custom = "custom",
    }
}

string_enum! {
    /// What a rule does to its job when its condition is met.
    Action {
        Start = "START",
        Stop = "STOP",
        Restart = "RESTART",
        None = "NONE",
    }
}

string_enum! {
    /// Whether a rule fires at most once per execution or every time.
    Life {
        Once = "ONCE",
        Repeated = "REPEATED",
    }
}

string_enum! {
    /// A job status a condition can wait for. `FINISHED` means any terminal state.
    StatusCondition {
        Started = "STARTED",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Stopped = "STOPPED",
        Finished = "FINISHED",
    }
}

string_enum! {
    /// When a container job's image is pulled from its registry.
    Pull {
        /// Only when the engine does not have the image (the default).
        IfMissing = "if_missing",
        /// Before every attempt, so a moved tag is followed.
        Always = "always",
        /// Never: the image must already be on the engine (air-gapped clusters).
        Never = "never",
    }
}

string_enum! {
    /// What a cron trigger does about ticks missed while the scheduler was down.
    Catchup {
        None = "none",
        Latest = "latest",
        All = "all",
    }
}

#[allow(clippy::derivable_impls)] // the enum is generated by a macro
impl Default for Life {
    fn default() -> Self {
        Self::Repeated
    }
}

#[allow(clippy::derivable_impls)] // the enum is generated by a macro
impl Default for Catchup {
    fn default() -> Self {
        Self::None
    }
}

#[allow(clippy::derivable_impls)] // the enum is generated by a macro
impl Default for Op {
    fn default() -> Self {
        Self::Custom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parse_keeps_unknown_words() {
        let a: Action = serde_json::from_str("\"RESTART\"").unwrap();
        assert_eq!(a, Action::Restart);
        let u: Action = serde_json::from_str("\"JUMP\"").unwrap();
        assert_eq!(u, Action::Unknown("JUMP".into()));
        assert!(!u.is_known());
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"JUMP\"");
        let err = "JUMP".parse::<Action>().unwrap_err();
        assert!(err.contains("START, STOP, RESTART, NONE"), "{err}");
    }
}
