/**
 * sandpit — TypeScript SDK for the self-hosted sandpit sandbox service.
 *
 * Works on Node 20+ (the `ws` package supplies WebSocket) and in browsers (fetch + WebSocket). Node-only
 * pieces (reading the daemon's key file, `attach*`) are loaded on demand; see also `sandpit/node`.
 *
 * @example
 * ```ts
 * import { Sandbox } from "sandpit";
 * const sandbox = await Sandbox.create();
 * const result = await sandbox.commands.run("echo hello");
 * console.log(result.stdout, result.exitCode);
 * await sandbox.kill();
 * ```
 * @packageDocumentation
 */
export { Sandbox } from "./sandbox.js";
export { Keys } from "./keys.js";
export type { Scope, KeyInfo, CreatedKey, CreateKeyOpts } from "./keys.js";
export { Tenants } from "./tenants.js";
export { Audit } from "./audit.js";
export type { AuditEntry, AuditPage, AuditQuery } from "./audit.js";
export { Events } from "./events.js";
export type {
  LifecycleEvent,
  LifecycleEventType,
  EventPage,
  EventQuery,
  EventStreamOpts,
  SandboxEventQuery,
  SandboxEventStreamOpts,
} from "./events.js";
export type { MetricSample, MetricsQuery, MetricsStreamOpts } from "./metrics.js";
export { Webhooks } from "./webhooks.js";
export type { WebhookInfo, CreateWebhookOpts, WebhookDelivery, DeliveryOutcome, DeliveriesOpts } from "./webhooks.js";
export type { TenantInfo, TenantQuotas, TenantUsage } from "./tenants.js";
export { Templates } from "./templates.js";
export type {
  TemplateInfo,
  TemplateSource,
  TemplateBuild,
  TemplateBuildState,
  TemplateWaitOpts,
  TemplateTransferOpts,
  ArchiveData,
  SnapshotInfo,
  PoolInfo,
} from "./templates.js";
export { Volumes } from "./volumes.js";
export type { VolumeInfo, VolumeMount } from "./volumes.js";
export type { NetworkPolicy, ExposedPort, ExposePortOpts } from "./network.js";
export type { SandboxOpts, SandboxListOpts, ExecOpts, ForkOpts, ForkResult } from "./sandbox.js";
export { Commands, CommandHandle, CommandSession } from "./commands.js";
export type { RunOpts, RunStreamOpts, SpawnOpts, CommandWaitOpts, OutputCallbacks, RequestOpts, SessionStdin } from "./commands.js";
export { ExecHandle, ExecSink } from "./exec.js";
export type { ExecEvent } from "./exec.js";
export { Processes, ProcessHandle } from "./processes.js";
export { Files, WatchHandle, tarStream } from "./files.js";
export type { EntryInfo, FilesystemEvent, FileData, FileOpts, WriteEntry, SignedUrl } from "./files.js";
export type { ProcessStartOpts, ProcessListOpts, ProcessList, WriteStdinOpts, ProcessEvent, StreamOpts } from "./processes.js";
export { ExecOutput, ExitStatus, outputText } from "./output.js";
export type { CommandResult, ProcessResult, OutputText } from "./output.js";
export { ExecOptionsBuilder, AttachOptionsBuilder, parseDetachKeys } from "./builders.js";
export type { ExecOptions, AttachOptions, AttachIO, StdinMode } from "./builders.js";
export {
  SandboxError,
  AuthenticationError,
  InvalidArgumentError,
  NotFoundError,
  ConflictError,
  TimeoutError,
  SandboxTimeoutError,
  PayloadTooLargeError,
  ResourceExhaustedError,
  InsufficientStorageError,
  PermissionDeniedError,
  AlreadyExistsError,
  NotEmptyError,
  IsADirError,
  NotADirError,
  UnavailableError,
  InternalError,
  CommandExitError,
  TemplateBuildError,
  errorFromBody,
} from "./errors.js";
export type { CommandExitInfo } from "./errors.js";
export { DEFAULT_URL } from "./config.js";
export type { ConnectionOptions, WebSocketConstructor } from "./config.js";
export { HttpClient } from "./client.js";
export { decodeSse, parseSse } from "./sse.js";
export type { SseMessage } from "./sse.js";
export type {
  SandboxInfo,
  SandboxState,
  ProcessInfo,
  ProcessResources,
  ProcessStatus,
  Rlimit,
  RlimitResource,
  Signal,
} from "./types.js";
export type { StartOptions } from "./start.js";
