use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "detector_configs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub operator_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub detector_key: String,
    pub updated_at: i64,
    /// The full record as JSON.
    pub doc: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
