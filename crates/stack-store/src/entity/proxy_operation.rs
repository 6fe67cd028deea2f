use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "proxy_operations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub operator_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    pub state: String,
    pub created_at: i64,
    pub doc: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
