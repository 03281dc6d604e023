#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::database::run::<mysql_rotation::Mysql>().await
}
