use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_meters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub operator_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub meter: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub period: String,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
