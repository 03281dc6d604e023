#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    rotation::database::run::<redshift_rotation::Redshift>().await
}
