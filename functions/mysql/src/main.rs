#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::run::<mysql_rotation::Mysql>().await
}
