pub mod alert;
pub mod rules;
