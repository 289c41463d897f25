//! Scopes and the scope each RPC needs: `<area>:read` for methods that change nothing,
//! `<area>:write` for the others, `admin` for personal-data export and erasure and for any
//! method the rule below does not know. The methods come from the contracts' descriptor
//! set, so an RPC added to a `.proto` file is classified (or refused) without code here.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    str::FromStr,
    sync::OnceLock,
};

use prost_reflect::DescriptorPool;

/// What a scope lets a token do within one area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Methods that change nothing.
    Read,
    /// Methods that change records, or send, emit or assign something.
    Write,
}

/// A permission a token carries: `admin` (every method), or read or write access to the
/// methods of one area, e.g. `capture:write`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every method, including personal-data export and erasure.
    Admin,
    /// The methods of `area` (the second part of the package, `capture` in
    /// `leadflow.capture.v1`) that `access` covers.
    Area {
        /// The area, e.g. `scoring`.
        area: String,
        /// Read or write.
        access: Access,
    },
}

impl Scope {
    /// `<area>:read`.
    pub fn read(area: &str) -> Self {
        Self::Area {
            area: area.to_owned(),
            access: Access::Read,
        }
    }

    /// `<area>:write`.
    pub fn write(area: &str) -> Self {
        Self::Area {
            area: area.to_owned(),
            access: Access::Write,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Area {
                area,
                access: Access::Read,
            } => write!(f, "{area}:read"),
            Self::Area {
                area,
                access: Access::Write,
            } => write!(f, "{area}:write"),
        }
    }
}

/// A scope that is not `admin` or `<area>:read|write` for an area the contracts define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {given:?}: a scope is admin, or AREA:read or AREA:write with AREA one of {known}"
)]
pub struct UnknownScope {
    given: String,
    known: String,
}

impl FromStr for Scope {
    type Err = UnknownScope;

    /// Parses a scope, accepting only areas of the contracts compiled into this build, so a
    /// typo in a tokens file is an error rather than a scope that never matches.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let methods = MethodScopes::leadflow();
        let scope = match text.split_once(':') {
            None if text == "admin" => Some(Self::Admin),
            Some((area, "read")) if methods.areas.contains(area) => Some(Self::read(area)),
            Some((area, "write")) if methods.areas.contains(area) => Some(Self::write(area)),
            _ => None,
        };
        scope.ok_or_else(|| UnknownScope {
            given: text.to_owned(),
            known: methods
                .areas
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Verbs (the first words of a method name) of methods that change nothing.
const READ_VERBS: &[&str] = &["Get", "List", "BatchGet", "Watch", "Explain"];

/// Verbs of methods that change records, or send, emit or assign something.
const WRITE_VERBS: &[&str] = &[
    "Accept",
    "Activate",
    "Classify",
    "Close",
    "Confirm",
    "Create",
    "Delete",
    "Enroll",
    "Import",
    "Merge",
    "Open",
    "Pause",
    "Publish",
    "Qualify",
    "Reassign",
    "Rebuild",
    "Record",
    "Reject",
    "Resume",
    "Retire",
    "Set",
    "Stop",
    "Submit",
    "Track",
    "Transition",
    "Update",
    "Withdraw",
];

/// Verbs of the personal-data methods (GDPR access and erasure): everything about a person
/// leaves, or is gone for good, so no area scope is enough.
const ADMIN_VERBS: &[&str] = &["Export", "Erase"];

/// Methods whose verb says nothing about what they do, each reviewed against its contract:
/// all three compute an answer and write nothing.
const REVIEWED_METHODS: &[(&str, Access)] = &[
    // Which fields a form should ask next; known values are never returned.
    (
        "leadflow.capture.v1.CaptureService/ResolveFormFields",
        Access::Read,
    ),
    // Scores every lead with a draft model "without changing anything".
    (
        "leadflow.scoring.v1.ScoringService/DryRunScoringModel",
        Access::Read,
    ),
    // Replays leads against a proposed rule set: "nothing is assigned, queued or emitted".
    (
        "leadflow.routing.v1.RoutingService/SimulateRouting",
        Access::Read,
    ),
];

/// Whether `method` begins with the word `verb`: `GetForm` does, `Settle` does not begin
/// with `Set`.
fn begins_with_verb(method: &str, verb: &str) -> bool {
    method
        .strip_prefix(verb)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// The scope `method` of `service` (`leadflow.<area>.<version>.<Name>`) in `area` needs, or
/// None when no rule knows the method (it then needs `admin`).
pub fn classify(service: &str, method: &str, area: &str) -> Option<Scope> {
    let full = format!("{service}/{method}");
    if let Some((_, access)) = REVIEWED_METHODS.iter().find(|(name, _)| *name == full) {
        return Some(match access {
            Access::Read => Scope::read(area),
            Access::Write => Scope::write(area),
        });
    }
    let has = |verbs: &[&str]| verbs.iter().any(|verb| begins_with_verb(method, verb));
    if has(ADMIN_VERBS) {
        Some(Scope::Admin)
    } else if has(READ_VERBS) {
        Some(Scope::read(area))
    } else if has(WRITE_VERBS) {
        Some(Scope::write(area))
    } else {
        None
    }
}

/// The scope every leadflow method needs, by request path (`/package.Service/Method`).
#[derive(Debug, Clone)]
pub struct MethodScopes {
    by_path: HashMap<String, Scope>,
    areas: BTreeSet<String>,
    unclassified: Vec<String>,
}

impl MethodScopes {
    /// The methods of the contracts compiled into this build.
    pub fn leadflow() -> &'static Self {
        static METHODS: OnceLock<MethodScopes> = OnceLock::new();
        METHODS.get_or_init(|| Self::of_pool(crate::proto_json::descriptor_pool()))
    }

    /// The methods of every `leadflow.<area>.*` service in `pool`.
    pub fn of_pool(pool: &DescriptorPool) -> Self {
        let mut by_path = HashMap::new();
        let mut areas = BTreeSet::new();
        let mut unclassified = Vec::new();
        for service in pool.services() {
            let Some(area) = area_of(service.package_name()) else {
                continue;
            };
            areas.insert(area.to_owned());
            for method in service.methods() {
                let scope =
                    classify(service.full_name(), method.name(), area).unwrap_or_else(|| {
                        unclassified.push(format!("{}/{}", service.full_name(), method.name()));
                        Scope::Admin
                    });
                by_path.insert(format!("/{}/{}", service.full_name(), method.name()), scope);
            }
        }
        Self {
            by_path,
            areas,
            unclassified,
        }
    }

    /// The scope a call to `path` needs. A path no contract defines needs `admin`: what is
    /// not known is not open.
    pub fn required(&self, path: &str) -> &Scope {
        self.by_path.get(path).unwrap_or(&Scope::Admin)
    }

    /// Every method's path and the scope it needs, sorted by path.
    pub fn methods(&self) -> Vec<(&str, &Scope)> {
        let mut methods: Vec<_> = self
            .by_path
            .iter()
            .map(|(path, scope)| (path.as_str(), scope))
            .collect();
        methods.sort();
        methods
    }

    /// The areas, e.g. `capture`, each with a `:read` and a `:write` scope.
    pub fn areas(&self) -> impl Iterator<Item = &str> {
        self.areas.iter().map(String::as_str)
    }

    /// Methods no rule classifies (`service/method`), which only `admin` may call.
    pub fn unclassified(&self) -> &[String] {
        &self.unclassified
    }
}

/// `capture` of `leadflow.capture.v1`; None for packages that are not leadflow's.
fn area_of(package: &str) -> Option<&str> {
    let mut parts = package.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("leadflow"), Some(area), Some(_version)) if !area.is_empty() => Some(area),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = "leadflow.capture.v1.CaptureService";
    const SCORING: &str = "leadflow.scoring.v1.ScoringService";
    const NURTURING: &str = "leadflow.nurturing.v1.NurturingService";
    const ROUTING: &str = "leadflow.routing.v1.RoutingService";

    fn needs(service: &str, method: &str) -> String {
        MethodScopes::leadflow()
            .required(&format!("/{service}/{method}"))
            .to_string()
    }

    #[test]
    fn reads_writes_and_personal_data_need_their_scopes() {
        let expected = [
            (CAPTURE, "GetForm", "capture:read"),
            (CAPTURE, "ListLeads", "capture:read"),
            (CAPTURE, "ResolveFormFields", "capture:read"),
            (CAPTURE, "SubmitForm", "capture:write"),
            (CAPTURE, "TrackActivities", "capture:write"),
            (CAPTURE, "ImportLeads", "capture:write"),
            (CAPTURE, "ConfirmDoubleOptIn", "capture:write"),
            (CAPTURE, "ExportContact", "admin"),
            (CAPTURE, "EraseContact", "admin"),
            (SCORING, "ExplainScore", "scoring:read"),
            (SCORING, "DryRunScoringModel", "scoring:read"),
            (SCORING, "GetFunnelReport", "scoring:read"),
            (SCORING, "RebuildScores", "scoring:write"),
            (SCORING, "ClassifyLead", "scoring:write"),
            (SCORING, "ExportContactData", "admin"),
            (SCORING, "EraseContactData", "admin"),
            (NURTURING, "GetNurtureReport", "nurturing:read"),
            (NURTURING, "SetFrequencyPolicy", "nurturing:write"),
            (NURTURING, "StopEnrollment", "nurturing:write"),
            (NURTURING, "ExportContactData", "admin"),
            (NURTURING, "EraseContactData", "admin"),
            (ROUTING, "SimulateRouting", "routing:read"),
            (ROUTING, "ExplainAssignment", "routing:read"),
            (ROUTING, "GetTeamQueue", "routing:read"),
            (ROUTING, "AcceptAssignment", "routing:write"),
            (ROUTING, "CloseDeal", "routing:write"),
            (ROUTING, "OpenOpportunity", "routing:write"),
        ];
        for (service, method, scope) in expected {
            assert_eq!(needs(service, method), scope, "{service}/{method}");
        }
    }

    #[test]
    fn every_method_of_the_contracts_is_classified_by_a_reviewed_rule() {
        let methods = MethodScopes::leadflow();
        // A new RPC whose verb no list names is refused to all but admin; this makes the
        // build say so, so its scope is decided on purpose.
        assert!(
            methods.unclassified().is_empty(),
            "add these to READ_VERBS, WRITE_VERBS, ADMIN_VERBS or REVIEWED_METHODS: {:?}",
            methods.unclassified()
        );
        assert!(methods.methods().len() > 80, "{}", methods.methods().len());
        assert_eq!(
            methods.areas().collect::<Vec<_>>(),
            ["capture", "nurturing", "routing", "scoring"]
        );
        for (path, _) in REVIEWED_METHODS {
            assert!(
                methods.by_path.contains_key(&format!("/{path}")),
                "{path} is reviewed but no contract defines it"
            );
        }
    }

    #[test]
    fn what_no_contract_defines_needs_admin() {
        let methods = MethodScopes::leadflow();
        for path in [
            "/leadflow.capture.v1.CaptureService/GetNothing",
            "/leadflow.nope.v1.NopeService/GetForm",
            "/grpc.health.v1.Health/Check",
            "",
            "/",
        ] {
            assert_eq!(methods.required(path), &Scope::Admin, "{path:?}");
        }
        assert_eq!(classify(CAPTURE, "FrobnicateLeads", "capture"), None);
        assert_eq!(classify(CAPTURE, "Settle", "capture"), None, "not Set");
        assert_eq!(classify(CAPTURE, "Getaway", "capture"), None, "not Get");
    }

    #[test]
    fn scopes_parse_only_for_known_areas() {
        assert_eq!("admin".parse::<Scope>(), Ok(Scope::Admin));
        assert_eq!("routing:read".parse::<Scope>(), Ok(Scope::read("routing")));
        assert_eq!(
            "capture:write".parse::<Scope>(),
            Ok(Scope::write("capture"))
        );
        for bad in [
            "captur:write",
            "capture:delete",
            "capture",
            "Admin",
            "",
            ":read",
        ] {
            let error = bad.parse::<Scope>().expect_err(bad).to_string();
            assert!(
                error.contains(&format!("{bad:?}")) && error.contains("capture, nurturing"),
                "{error}"
            );
        }
        assert_eq!(Scope::write("scoring").to_string(), "scoring:write");
    }
}
