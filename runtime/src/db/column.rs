//! Typed columns. Ids and statuses are stored as text on both backends and
//! read back as the types the domain speaks, so a malformed stored value is
//! a query error at the boundary, never a panic deep in a handler, and a
//! row struct cannot be confused with another's ids.
//!
//! [`text_column!`] makes any `Display + FromStr` type a `Text` column on
//! SQLite, PostgreSQL and [`AnyConnection`](crate::db::AnyConnection);
//! [`typed_id!`] and [`text_enum!`] build on it.

// The crates the macros below expand to, reachable as `$crate::db::column::__x`
// from a service that does not depend on them itself.
#[doc(hidden)]
pub use serde as __serde;
#[doc(hidden)]
pub use utoipa as __utoipa;
#[doc(hidden)]
pub use uuid as __uuid;

/// A stored text that is not one of the type's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// Implements diesel's `ToSql`/`FromSql` for `Text` on SQLite, PostgreSQL and
/// the multi-backend connection, through the type's `Display` and `FromStr`.
#[macro_export]
macro_rules! text_column {
    ($ty:ty) => {
        impl ::diesel::serialize::ToSql<::diesel::sql_types::Text, ::diesel::sqlite::Sqlite>
            for $ty
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut ::diesel::serialize::Output<'b, '_, ::diesel::sqlite::Sqlite>,
            ) -> ::diesel::serialize::Result {
                out.set_value(self.to_string());
                ::core::result::Result::Ok(::diesel::serialize::IsNull::No)
            }
        }

        impl ::diesel::serialize::ToSql<::diesel::sql_types::Text, ::diesel::pg::Pg> for $ty {
            fn to_sql<'b>(
                &'b self,
                out: &mut ::diesel::serialize::Output<'b, '_, ::diesel::pg::Pg>,
            ) -> ::diesel::serialize::Result {
                ::std::io::Write::write_all(out, self.to_string().as_bytes())?;
                ::core::result::Result::Ok(::diesel::serialize::IsNull::No)
            }
        }

        impl ::diesel::serialize::ToSql<::diesel::sql_types::Text, $crate::db::MultiBackend>
            for $ty
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut ::diesel::serialize::Output<'b, '_, $crate::db::MultiBackend>,
            ) -> ::diesel::serialize::Result {
                out.set_value((::diesel::sql_types::Text, self));
                ::core::result::Result::Ok(::diesel::serialize::IsNull::No)
            }
        }

        impl ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::sqlite::Sqlite>
            for $ty
        {
            fn from_sql(
                value: <::diesel::sqlite::Sqlite as ::diesel::backend::Backend>::RawValue<'_>,
            ) -> ::diesel::deserialize::Result<Self> {
                let text = <::std::string::String as ::diesel::deserialize::FromSql<
                    ::diesel::sql_types::Text,
                    ::diesel::sqlite::Sqlite,
                >>::from_sql(value)?;
                ::core::result::Result::Ok(text.parse::<$ty>()?)
            }
        }

        impl ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::pg::Pg> for $ty {
            fn from_sql(
                value: <::diesel::pg::Pg as ::diesel::backend::Backend>::RawValue<'_>,
            ) -> ::diesel::deserialize::Result<Self> {
                let text = <::std::string::String as ::diesel::deserialize::FromSql<
                    ::diesel::sql_types::Text,
                    ::diesel::pg::Pg,
                >>::from_sql(value)?;
                ::core::result::Result::Ok(text.parse::<$ty>()?)
            }
        }

        impl ::diesel::deserialize::FromSql<::diesel::sql_types::Text, $crate::db::MultiBackend>
            for $ty
        {
            fn from_sql(
                value: <$crate::db::MultiBackend as ::diesel::backend::Backend>::RawValue<'_>,
            ) -> ::diesel::deserialize::Result<Self> {
                value.from_sql::<Self, ::diesel::sql_types::Text>()
            }
        }
    };
}

/// A UUID that names one kind of thing (`typed_id!(pub ReservationId)`):
/// stored as text, serialized as the bare UUID, convertible to and from
/// the `Uuid` the events carry.
#[macro_export]
macro_rules! typed_id {
    ($(#[$meta:meta])* $vis:vis $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::diesel::expression::AsExpression, ::diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = ::diesel::sql_types::Text)]
        $vis struct $name(pub $crate::db::column::__uuid::Uuid);

        impl $name {
            /// A new id, ordered by creation time (UUID v7).
            pub fn generate() -> Self {
                $name($crate::db::column::__uuid::Uuid::now_v7())
            }

            pub fn get(self) -> $crate::db::column::__uuid::Uuid {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::db::column::__uuid::Error;

            fn from_str(text: &str) -> ::core::result::Result<Self, Self::Err> {
                $crate::db::column::__uuid::Uuid::parse_str(text).map($name)
            }
        }

        impl ::core::convert::From<$crate::db::column::__uuid::Uuid> for $name {
            fn from(id: $crate::db::column::__uuid::Uuid) -> Self {
                $name(id)
            }
        }

        // In API documents: a UUID, named for what it identifies.
        impl $crate::db::column::__utoipa::PartialSchema for $name {
            fn schema() -> $crate::db::column::__utoipa::openapi::RefOr<$crate::db::column::__utoipa::openapi::schema::Schema> {
                use $crate::db::column::__utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
                let uuid = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .build();
                $crate::db::column::__utoipa::openapi::RefOr::T(Schema::Object(uuid))
            }
        }

        impl $crate::db::column::__utoipa::ToSchema for $name {}

        impl ::core::convert::From<$name> for $crate::db::column::__uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl ::core::cmp::PartialEq<$crate::db::column::__uuid::Uuid> for $name {
            fn eq(&self, other: &$crate::db::column::__uuid::Uuid) -> bool {
                self.0 == *other
            }
        }

        impl $crate::db::column::__serde::Serialize for $name {
            fn serialize<S: $crate::db::column::__serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::db::column::__serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> $crate::db::column::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::db::column::__serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                <$crate::db::column::__uuid::Uuid as $crate::db::column::__serde::Deserialize>::deserialize(d).map($name)
            }
        }

        $crate::text_column!($name);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __join_names {
    ($first:literal $(, $rest:literal)*) => {
        concat!($first $(, ", ", $rest)*)
    };
}

/// An enum stored, serialized and shown by fixed names:
///
/// ```ignore
/// text_enum! {
///     /// Where a reservation is in its life.
///     pub enum Status { Pending = "PENDING", Held = "HELD" }
/// }
/// ```
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            ::diesel::expression::AsExpression, ::diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = ::diesel::sql_types::Text)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The names, for error messages: `PENDING, HELD`.
            pub const NAMES: &'static str = $crate::__join_names!($($text),+);
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::db::column::UnknownValue;

            fn from_str(text: &str) -> ::core::result::Result<Self, Self::Err> {
                match text {
                    $($text => ::core::result::Result::Ok($name::$variant),)+
                    _ => ::core::result::Result::Err($crate::db::column::UnknownValue {
                        kind: stringify!($name),
                        value: ::std::borrow::ToOwned::to_owned(text),
                    }),
                }
            }
        }

        impl $crate::db::column::__serde::Serialize for $name {
            fn serialize<S: $crate::db::column::__serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        // In API documents: one of the names.
        impl $crate::db::column::__utoipa::PartialSchema for $name {
            fn schema() -> $crate::db::column::__utoipa::openapi::RefOr<$crate::db::column::__utoipa::openapi::schema::Schema> {
                use $crate::db::column::__utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
                let names = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([$($text),+]))
                    .build();
                $crate::db::column::__utoipa::openapi::RefOr::T(Schema::Object(names))
            }
        }

        impl $crate::db::column::__utoipa::ToSchema for $name {}

        impl<'de> $crate::db::column::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::db::column::__serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                let text = <::std::string::String as $crate::db::column::__serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(<D::Error as $crate::db::column::__serde::de::Error>::custom)
            }
        }

        $crate::text_column!($name);
    };
}

#[cfg(test)]
mod tests {
    use crate::dev::testkit::TestDatabase;
    use crate::ids::ReservationId;
    use crate::db::AnyConnection;
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    crate::text_enum! {
        enum Mood { Calm = "CALM", Restless = "RESTLESS" }
    }

    diesel::table! {
        typed_rows (id) {
            id -> Text,
            mood -> Text,
        }
    }

    fn round_trip(url: &str) {
        let mut conn = AnyConnection::establish(url).expect("test database");
        conn.batch_execute("CREATE TABLE typed_rows (id TEXT PRIMARY KEY, mood TEXT NOT NULL)")
            .expect("table");
        let id = ReservationId::generate();
        diesel::insert_into(typed_rows::table)
            .values((typed_rows::id.eq(id), typed_rows::mood.eq(Mood::Restless)))
            .execute(&mut conn)
            .expect("insert");
        let row: (ReservationId, Mood) = typed_rows::table
            .filter(typed_rows::mood.eq(Mood::Restless))
            .first(&mut conn)
            .expect("typed read");
        assert_eq!(row, (id, Mood::Restless));
        let text: String = typed_rows::table
            .select(typed_rows::id)
            .first(&mut conn)
            .expect("text read");
        assert_eq!(text, id.to_string(), "stored as the hyphenated UUID");

        conn.batch_execute("UPDATE typed_rows SET mood = 'GLUM'")
            .expect("corrupt");
        let error = typed_rows::table
            .first::<(ReservationId, Mood)>(&mut conn)
            .expect_err("a stored value outside the enum is an error, not a panic");
        assert!(format!("{error:?}").contains("GLUM"), "{error:?}");
    }

    #[test]
    fn typed_ids_and_enums_round_trip_on_sqlite() {
        round_trip(&TestDatabase::sqlite("typed-columns").url);
    }

    #[test]
    fn typed_ids_and_enums_round_trip_on_postgres() {
        round_trip(&TestDatabase::postgres("typed_columns").url);
    }

    #[test]
    fn enums_speak_their_names_in_json() {
        assert_eq!(
            serde_json::to_string(&Mood::Calm).ok().as_deref(),
            Some("\"CALM\"")
        );
        assert!(serde_json::from_str::<Mood>("\"SAD\"").is_err());
        assert_eq!(Mood::NAMES, "CALM, RESTLESS");
    }
}
