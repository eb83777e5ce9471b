//! Conversions between catalog types and their `sharing.v1` messages. The gateway sends the
//! catalog with [`dataset_to_pb`]; the agent checks what it received with [`dataset_from_pb`].

use crate::catalog::{Dataset, Field, FieldClass, FieldType, Role, TokenRecipe};
use crate::ids::{AgencyId, DatasetName, FieldName};
use sharing_proto::v1 as pb;

/// A catalog dataset as a message.
pub fn dataset_to_pb(d: &Dataset) -> pb::DatasetSchema {
    pb::DatasetSchema {
        name: d.name.to_string(),
        owner: d.owner.to_string(),
        version: d.version,
        description: d.description.clone(),
        fields: d
            .fields
            .iter()
            .map(|f| pb::FieldSchema {
                name: f.name.to_string(),
                r#type: type_to_pb(f.ty) as i32,
                class: class_to_pb(f.class) as i32,
                required: f.required,
                allowed: f.values.clone(),
                description: f.description.clone(),
                max_len: f.max_len,
            })
            .collect(),
        roles: d
            .roles
            .iter()
            .map(|r| pb::RoleSchema {
                name: r.name.clone(),
                tokens: r
                    .tokens
                    .iter()
                    .map(|t| pb::TokenRecipe {
                        kind: t.kind.clone(),
                        fields: t.fields.iter().map(|f| f.to_string()).collect(),
                    })
                    .collect(),
            })
            .collect(),
        record_key: d.record_key.iter().map(|f| f.to_string()).collect(),
    }
}

/// A received dataset message checked back into a catalog dataset.
pub fn dataset_from_pb(d: &pb::DatasetSchema) -> Result<Dataset, String> {
    let name = DatasetName::new(d.name.clone()).map_err(|e| e.to_string())?;
    let fname = |s: &str| FieldName::new(s).map_err(|e| format!("dataset {name}: {e}"));
    let mut fields = Vec::new();
    for f in &d.fields {
        let ty = pb::FieldType::try_from(f.r#type)
            .ok()
            .and_then(type_from_pb)
            .ok_or_else(|| format!("dataset {name}: field {} has an unknown type", f.name))?;
        let class = pb::FieldClass::try_from(f.class)
            .ok()
            .and_then(class_from_pb)
            .ok_or_else(|| format!("dataset {name}: field {} has an unknown class", f.name))?;
        fields.push(Field {
            name: fname(&f.name)?,
            ty,
            class,
            required: f.required,
            values: f.allowed.clone(),
            max_len: f.max_len,
            description: f.description.clone(),
        });
    }
    let mut roles = Vec::new();
    for r in &d.roles {
        let mut tokens = Vec::new();
        for t in &r.tokens {
            tokens.push(TokenRecipe {
                kind: t.kind.clone(),
                fields: t
                    .fields
                    .iter()
                    .map(|f| fname(f))
                    .collect::<Result<_, _>>()?,
            });
        }
        roles.push(Role {
            name: r.name.clone(),
            tokens,
        });
    }
    Ok(Dataset {
        owner: AgencyId::new(d.owner.clone()).map_err(|e| e.to_string())?,
        version: d.version,
        description: d.description.clone(),
        fields,
        roles,
        record_key: d
            .record_key
            .iter()
            .map(|f| fname(f))
            .collect::<Result<_, _>>()?,
        name,
    })
}

const TYPES: &[(FieldType, pb::FieldType)] = &[
    (FieldType::Str, pb::FieldType::Str),
    (FieldType::Int, pb::FieldType::Int),
    (FieldType::Date, pb::FieldType::Date),
    (FieldType::Datetime, pb::FieldType::Datetime),
    (FieldType::Enum, pb::FieldType::Enum),
    (FieldType::Bool, pb::FieldType::Bool),
    (FieldType::Set, pb::FieldType::Set),
    (FieldType::NhsNumber, pb::FieldType::NhsNumber),
    (FieldType::PncId, pb::FieldType::PncId),
    (FieldType::Name, pb::FieldType::Name),
    (FieldType::Postcode, pb::FieldType::Postcode),
    (FieldType::Reference, pb::FieldType::Reference),
    (FieldType::Uprn, pb::FieldType::Uprn),
];

fn type_to_pb(t: FieldType) -> pb::FieldType {
    TYPES
        .iter()
        .find(|(a, _)| *a == t)
        .map(|(_, b)| *b)
        .unwrap_or(pb::FieldType::Unspecified)
}

fn type_from_pb(t: pb::FieldType) -> Option<FieldType> {
    TYPES.iter().find(|(_, b)| *b == t).map(|(a, _)| *a)
}

fn class_to_pb(c: FieldClass) -> pb::FieldClass {
    match c {
        FieldClass::Direct => pb::FieldClass::DirectIdentifier,
        FieldClass::Quasi => pb::FieldClass::QuasiIdentifier,
        FieldClass::Special => pb::FieldClass::SpecialCategory,
        FieldClass::Operational => pb::FieldClass::Operational,
    }
}

fn class_from_pb(c: pb::FieldClass) -> Option<FieldClass> {
    match c {
        pb::FieldClass::DirectIdentifier => Some(FieldClass::Direct),
        pb::FieldClass::QuasiIdentifier => Some(FieldClass::Quasi),
        pb::FieldClass::SpecialCategory => Some(FieldClass::Special),
        pb::FieldClass::Operational => Some(FieldClass::Operational),
        pb::FieldClass::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dataset() {
        let c = crate::Catalog::embedded().expect("catalog");
        for d in c.datasets() {
            assert_eq!(&dataset_from_pb(&dataset_to_pb(d)).expect("back"), d);
        }
    }
}
