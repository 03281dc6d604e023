// Rotates an existing PostgreSQL secret with the PostgreSQL function of a deployed rotation-lambdas
// stack, in CDK. Deploy with `npx cdk deploy --app "npx ts-node rotation.ts" -c secretArn=<ARN>`
// (aws-cdk and ts-node installed), or copy the stack into your own app. CI only type-checks it:
// `npm install && npx tsc --noEmit`.
import { App, Duration, Fn, Stack, StackProps } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as secretsmanager from "aws-cdk-lib/aws-secretsmanager";
import { Construct } from "constructs";

interface RotatedSecretStackProps extends StackProps {
  /** Name of the stack deployed from this repository's template.yaml. */
  readonly rotationStackName: string;
  /** The secret to rotate: the JSON of AWS's rotation templates, as RDS and CDK write it. */
  readonly secretArn: string;
}

export class RotatedSecretStack extends Stack {
  constructor(scope: Construct, id: string, props: RotatedSecretStackProps) {
    super(scope, id, props);

    const secret = secretsmanager.Secret.fromSecretCompleteArn(this, "AppSecret", props.secretArn);

    // Exported by the rotation stack as <stack name>-PostgresRotationFunctionArn. That stack holds
    // the permission for Secrets Manager to invoke it, and its role may touch only secrets whose
    // rotation names the function, as this schedule does.
    const rotationFunction = lambda.Function.fromFunctionAttributes(this, "PostgresRotation", {
      functionArn: Fn.importValue(`${props.rotationStackName}-PostgresRotationFunctionArn`),
      sameEnvironment: true,
      skipPermissions: true,
    });

    new secretsmanager.RotationSchedule(this, "AppSecretRotation", {
      secret,
      rotationLambda: rotationFunction,
      automaticallyAfter: Duration.days(30),
      // The first rotation runs at the next window, not while this stack is deployed.
      rotateImmediatelyOnUpdate: false,
    });
  }
}

const app = new App();
new RotatedSecretStack(app, "RotatedSecretExample", {
  rotationStackName: app.node.tryGetContext("rotationStackName") ?? "rotation-lambdas",
  secretArn:
    app.node.tryGetContext("secretArn") ??
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/app/postgres-AbCdEf",
});
