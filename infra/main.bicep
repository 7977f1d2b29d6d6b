// SCIM for Entra ID on Azure Functions (Flex Consumption): the whole deployment, one resource
// group. azd reads main.parameters.json; `az deployment sub create` takes the parameters on the
// command line (docs/deployment.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME). Seeds every resource name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every regional resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object ID of the person (or CI principal) deploying (azd: AZURE_PRINCIPAL_ID). Gets Storage Table Data Contributor on the storage account so the admin CLI works from their machine. Empty: no such role.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Type of principalId (azd: AZURE_PRINCIPAL_TYPE).')
param principalType string = 'User'

@description('Name of the resource group; default rg-<environmentName>.')
param resourceGroupName string = ''

@minValue(1)
@maxValue(1000)
@description('HTTP requests one instance handles at once. The handlers are async and wait on storage, so one instance serves many; Python\'s default of 1 would scale out on every burst from Entra.')
param httpPerInstanceConcurrency int = 16

@minValue(40)
@maxValue(1000)
@description('Upper bound of instances (Flex Consumption accepts 40 to 1000).')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB.')
param instanceMemoryMB int = 2048

@description('Keep one HTTP instance always ready (no cold start for Entra\'s first request of a cycle, billed while idle).')
param alwaysReady bool = false

@minLength(1)
@maxLength(40)
@description('SCIM_TABLE_PREFIX: table names are <prefix>directory, <prefix>tenants, <prefix>log, <prefix>deliveries, <prefix>portal and <prefix>audit. Letters and digits only, starting with a letter.')
param tablePrefix string = 'scim'

@minValue(1024)
@maxValue(26214400)
@description('SCIM_MAX_BODY_BYTES: largest request body; larger gets 413. The Functions host refuses bodies above 4 times this (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT), at most its own 100 MB default.')
param maxBodyBytes int = 1048576

@description('NOTIFY_SCHEDULE: NCRONTAB schedule (with seconds) of the failure-digest timer.')
param notifySchedule string = '0 */10 * * * *'

@minValue(0)
@description('NOTIFY_MAX_EMAILS_PER_RUN: the most failure digests one timer run sends (0: no cap); the rest wait for the next runs, which batch their failures. 1 suits the Azure-managed email domain (5 emails a minute, 10 an hour, "Service limits for Azure Communication Services"); raise it, or set 0, with a custom domain.')
param notifyMaxEmailsPerRun int = 1

@minValue(1)
@description('LOG_RETENTION_DAYS: days the provisioning log keeps entries. Log Analytics keeps its logs as long (at least 30 and at most 730 days, the workspace\'s limits).')
param logRetentionDays int = 30

@minValue(15)
@description('EVENTS_SETTLE_SECONDS: the events feed serves events committed at least this long ago, so that a consumer following it never misses one (docs/events.md). 15 covers the writers\' 10 s bound plus a margin; raise it for more margin, never lower it.')
param eventsSettleSeconds int = 15

@minValue(1)
@description('EVENTS_RETENTION_DAYS: days change events are kept; the timer purges older ones and a feed cursor older than this is expired (410).')
param eventsRetentionDays int = 30

@description('Accept SCIM requests only from Microsoft Entra ID (the AzureActiveDirectory service tag) and allowedIpRanges; any other caller gets 403 from the platform. Recommended; azd turns it on (main.parameters.json).')
param restrictToEntra bool = false

@description('CIDR ranges also allowed in when restrictToEntra is on, e.g. [\'203.0.113.0/24\'] for an operator network or a portal that calls the app.')
param allowedIpRanges array = []

@description('PORTAL_OIDC_CLIENT_ID: application (client) id of the portal\'s Entra app registration, made with the az steps of docs/portal-signin.md (Bicep alone cannot make it). Empty: portal sign-in is off. The portal needs restrictToEntra off, or only operators in allowedIpRanges reach it (docs/portal-signin.md).')
param portalClientId string = ''

@description('PORTAL_OPERATOR_ROLE: the app role (its value) that makes a user of this deployment\'s tenant a portal operator.')
param portalOperatorRole string = 'Portal.Operator'

@description('PORTAL_OPERATOR_GROUP: object id of an Entra group (of this tenant) whose members are portal operators too. Empty: the role alone.')
param portalOperatorGroup string = ''

@description('PORTAL_TENANT_ADMIN_ROLE: the app role (its value) a customer\'s IT admins hold in their own tenant to manage their SCIM tenant in the portal.')
param portalTenantAdminRole string = 'Portal.TenantAdmin'

@allowed([
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_ZRS'
  'Standard_LRS'
])
@description('Replication of the storage account; regions without a paired region need Standard_ZRS or Standard_LRS.')
param storageSkuName string = 'Standard_GRS'

@description('Data location of the email services, e.g. "United States", "Europe", "UK".')
param emailDataLocation string = 'United States'

@description('Operator email address the alert rules notify (azd: ALERT_EMAIL). Empty: the rules are deployed and fire (Monitor > Alerts in the portal) but no action group exists and nobody is emailed.')
param alertEmail string = ''

@minValue(1)
@description('Fewest SCIM requests of a tenant in 30 minutes for its failure ratio (above 40 %, Entra\'s quarantine threshold) to alert.')
param alertMinRequests int = 20

@minValue(1)
@description('HTTP 5xx answers in 5 minutes that make a server-error burst alert.')
param alertServerErrorBurst int = 5

@description('Deploy an Application Insights standard availability test of GET /api/health (every 5 minutes from 5 locations, billed per test run) and its alert, emailed like the others (azd: SCIM_AVAILABILITY_TEST). With restrictToEntra it also lets the test agents in (the ApplicationInsightsAvailability service tag). Off: neither the test nor the rule.')
param availabilityTest bool = true

@description('Add a diagnostic setting on the Function App (FunctionAppLogs and AllMetrics to Log Analytics). Off by default: the Flex Consumption docs list diagnostic settings as not supported, and Application Insights already puts the app\'s logs in the workspace.')
param siteDiagnosticSetting bool = false

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// Every table the app opens (scim/store/tables.py, scim/provisioning_log/tables.py,
// scim/store/delivery_state_tables.py: webhook delivery's leases, cursors and lanes; the digest
// state in scim/notify/state.py lives in the tenants table; scim/store/portal_links_tables.py and
// portal_secrets_tables.py: the portal's setup links and session key; scim/store/audit_tables.py:
// the audit trail). storage.bicep creates them and rbac.bicep grants table data access on each
// of them, nothing wider.
var tableNames = [
  '${tablePrefix}directory'
  '${tablePrefix}tenants'
  '${tablePrefix}log'
  '${tablePrefix}deliveries'
  '${tablePrefix}portal'
  '${tablePrefix}audit'
]
// Log Analytics keeps logs as long as the provisioning log keeps entries, within the
// workspace's 30 to 730 days ("Manage data retention in a Log Analytics workspace").
var logAnalyticsRetentionDays = min(max(logRetentionDays, 30), 730)

resource rg 'Microsoft.Resources/resourceGroups@2025-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    retentionInDays: logAnalyticsRetentionDays
  }
}

module storage 'storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    skuName: storageSkuName
    deploymentContainerName: 'app-package'
    tableNames: tableNames
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module email 'email.bicep' = {
  name: 'email'
  scope: rg
  params: {
    tags: tags
    emailServiceName: '${abbrs.communicationEmailServices}${resourceToken}'
    communicationServiceName: '${abbrs.communicationCommunicationServices}${resourceToken}'
    dataLocation: emailDataLocation
  }
}

module app 'app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.webSitesFunctions}api-${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    identityName: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    blobEndpoint: storage.outputs.blobEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    siteDiagnosticSetting: siteDiagnosticSetting
    emailEndpoint: email.outputs.endpoint
    emailSender: email.outputs.senderAddress
    tablePrefix: tablePrefix
    maxBodyBytes: maxBodyBytes
    notifySchedule: notifySchedule
    notifyMaxEmailsPerRun: notifyMaxEmailsPerRun
    logRetentionDays: logRetentionDays
    eventsSettleSeconds: eventsSettleSeconds
    eventsRetentionDays: eventsRetentionDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReady: alwaysReady
    restrictToEntra: restrictToEntra
    allowedIpRanges: allowedIpRanges
    allowAvailabilityTests: availabilityTest
    portalClientId: portalClientId
    portalOperatorRole: portalOperatorRole
    portalOperatorGroup: portalOperatorGroup
    portalTenantAdminRole: portalTenantAdminRole
  }
}

module rbac 'rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: app.outputs.identityPrincipalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    tableNames: tableNames
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    communicationServiceName: email.outputs.communicationServiceName
  }
}

// Alert rules on the app's telemetry and the availability test of /api/health, emailed to
// alertEmail (README, "Operations").
module alerts 'alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertEmail: alertEmail
    minRequests: alertMinRequests
    serverErrorBurst: alertServerErrorBurst
    availabilityTest: availabilityTest
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    siteHostName: app.outputs.hostName
  }
}

// The operations workbook (infra/workbook.json).
module workbook 'workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    displayName: 'SCIM operations (${environmentName})'
  }
}

// Outputs become azd environment values (azd env get-values). No keys or secrets here.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = app.outputs.name
output FUNCTION_APP_URL string = app.outputs.baseUrl
output SCIM_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output SCIM_PUBLIC_BASE_URL string = app.outputs.baseUrl
output SCIM_TABLE_PREFIX string = tablePrefix
// For the portal's app registration (docs/portal-signin.md): its web redirect URI, and the
// federated credential's subject (the object id of the app's managed identity).
output PORTAL_REDIRECT_URI string = '${app.outputs.baseUrl}/portal/auth/callback'
output APP_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
// Run from the repository root after `make venv`: the venv's python has the app's packages.
output CREATE_FIRST_TENANT_COMMAND string = 'SCIM_TABLE_ENDPOINT=${storage.outputs.tableEndpoint} SCIM_PUBLIC_BASE_URL=${app.outputs.baseUrl} SCIM_TABLE_PREFIX=${tablePrefix} .venv/bin/python -m scim.admin tenant create <name>'
