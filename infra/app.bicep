// The Function App on the Flex Consumption plan (FC1), Python 3.11, running as a user-assigned
// managed identity; every connection it makes (host storage, tables, telemetry, email) uses
// that identity. Roles are granted in rbac.bicep.

@description('Region of the plan, the app and its identity.')
param location string

@description('Tags applied to every resource here; the app also gets azd-service-name.')
param tags object

@description('Name of the Function App (also the first label of its default host name).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the user-assigned managed identity the app runs as.')
param identityName string

@description('URL of the blob container Flex Consumption deploys the package from.')
param deploymentContainerUrl string

@description('Blob service endpoint of the storage account (host storage).')
param blobEndpoint string

@description('Table service endpoint of the storage account (host storage and SCIM_TABLE_ENDPOINT).')
param tableEndpoint string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Resource ID of the Log Analytics workspace (target of the optional site diagnostic setting).')
param logAnalyticsId string

@description('Add a diagnostic setting on the site (FunctionAppLogs and AllMetrics to Log Analytics). Off by default: the Flex Consumption docs list diagnostic settings as not supported, and the app\'s logs already reach the workspace through Application Insights (AppTraces, AppRequests).')
param siteDiagnosticSetting bool = false

@description('ACS_EMAIL_ENDPOINT: the Communication Service endpoint.')
param emailEndpoint string

@description('NOTIFY_FROM: sender address of the failure digests.')
param emailSender string

// App settings and scale settings: described in main.bicep, which passes them through.
param tablePrefix string
param maxBodyBytes int
param notifySchedule string
param notifyMaxEmailsPerRun int
param logRetentionDays int
param eventsSettleSeconds int
param eventsRetentionDays int
param maximumInstanceCount int
param instanceMemoryMB int
param httpPerInstanceConcurrency int
param alwaysReady bool

@description('Accept HTTP requests only from Microsoft Entra ID (the AzureActiveDirectory service tag) and allowedIpRanges; everything else gets 403 from the platform.')
param restrictToEntra bool

@description('Extra CIDR ranges (e.g. an operator network) allowed in when restrictToEntra is on.')
param allowedIpRanges array

@description('Also let in the Application Insights availability tests (the ApplicationInsightsAvailability service tag) when restrictToEntra is on: main.bicep sets it when it deploys the availability test of /api/health (alerts.bicep).')
param allowAvailabilityTests bool

// Portal sign-in (docs/portal-signin.md): described in main.bicep, which passes them through.
param portalClientId string
param portalOperatorRole string
param portalOperatorGroup string
param portalTenantAdminRole string

// The Functions host's own cap on request bodies (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, in bytes;
// default 104857600, see "App settings reference for Azure Functions"), derived from
// SCIM_MAX_BODY_BYTES so the two cannot drift. A few times larger than the app's limit: a body
// between the two still reaches the app, which answers with a SCIM 413; anything larger is
// refused by the host before it is buffered.
var hostRequestBodyLimitBytes = maxBodyBytes * 4

// Inbound access restrictions ("Azure App Service access restrictions"; Flex Consumption supports
// inbound IP restrictions): Entra's provisioning service calls from the IP ranges of the
// AzureActiveDirectory service tag ("Develop and plan provisioning for a SCIM endpoint", IP
// ranges), so Test connection and every provisioning cycle come in through the first rule.
var operatorRules = [for (range, i) in allowedIpRanges: {
  name: 'operator-${i}'
  description: 'Operator range from the allowedIpRanges parameter'
  action: 'Allow'
  tag: 'Default'
  ipAddress: range
  priority: 200 + i
}]
// The availability test of /api/health (alerts.bicep) runs from Application Insights' test
// agents, whose addresses are the ApplicationInsightsAvailability service tag ("Virtual network
// service tags": inbound; "Application Insights availability tests", Testing behind a firewall).
// What this lets in: those addresses are shared by every customer's availability tests, and an
// access restriction cannot be scoped to a path, so anyone's standard test (GET, HEAD or POST,
// with headers and a body of its choosing) reaches every route of the app from them, as anyone's
// Entra provisioning job already does through the first rule. The app answers one route without
// a credential, GET /api/health (200 or 503, no data; at most one storage read a second per
// instance); SCIM still needs a tenant's token (Secret Token or OAuth access token), the events
// feed an application key, the token endpoint an OAuth client's credentials and the portal a
// sign-in or a setup link; the SCM site keeps its own rules. The rule exists only while the test
// is deployed (allowAvailabilityTests).
var availabilityTestRules = allowAvailabilityTests ? [
  {
    name: 'availability-tests'
    description: 'Application Insights availability tests (GET /api/health)'
    action: 'Allow'
    tag: 'ServiceTag'
    ipAddress: 'ApplicationInsightsAvailability'
    priority: 110
  }
] : []
var accessRules = restrictToEntra ? concat([
  {
    name: 'entra-provisioning'
    description: 'Microsoft Entra ID provisioning service'
    action: 'Allow'
    tag: 'ServiceTag'
    ipAddress: 'AzureActiveDirectory'
    priority: 100
  }
], availabilityTestRules, operatorRules) : []

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: identityName
  location: location
  tags: tags
}

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption depends on the region; Entra retries failed provisioning calls, so a zone outage delays provisioning without losing changes.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource site 'Microsoft.Web/sites@2025-03-01' = {
  // checkov:skip=CKV_AZURE_222: Entra's provisioning service calls the SCIM endpoint over the public internet (restrictToEntra limits callers to the AzureActiveDirectory service tag); each tenant authenticates with its bearer Secret Token, checked by the app.
  // checkov:skip=CKV_AZURE_17: Entra provisioning sends no client certificate; callers authenticate with a bearer token.
  // checkov:skip=CKV_AZURE_212: the worker count (numberOfWorkers) belongs to fixed-size plans; Flex Consumption adds instances on demand (up to maximumInstanceCount).
  // checkov:skip=CKV_AZURE_213: App Service Health check (siteConfig.healthCheckPath) is a Premium and Dedicated plan option, not offered on Flex Consumption, which manages its instances itself; /api/health is probed by the Application Insights availability test in alerts.bicep instead.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      ipSecurityRestrictions: accessRules
      ipSecurityRestrictionsDefaultAction: restrictToEntra ? 'Deny' : 'Allow'
      // The SCM site is the deployment endpoint (azd deploy, func publish) and keeps its own
      // rules: it accepts Entra-authenticated deployments only, as basic publishing is off below.
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Allow'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady ? [
          {
            name: 'http'
            instanceCount: 1
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployments authenticate with Entra (azd, func, az); no FTP or SCM basic-auth credentials.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Flex Consumption takes the runtime from functionAppConfig: FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION must not be set. tests/test_infra.py cross-checks these names
// with the settings the code reads. Host storage: blob only (keys, leases, timer checkpoints;
// Storage Blob Data Owner, rbac.bicep) and the table endpoint; no queueServiceUri: the app has
// HTTP and timer triggers only, and the Flex quickstart template (Azure-Samples/
// functions-quickstart-python-http-azd, infra/main.bicep) enables the queue endpoint "for
// Durable Functions and MCP trigger" only, blob "for ... Timer trigger checkpointing".
resource appSettings 'Microsoft.Web/sites/config@2025-03-01' = {
  // checkov:skip=CKV_AZURE_13: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); SCIM callers authenticate with bearer tokens the app checks.
  // checkov:skip=CKV_AZURE_63: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); request logs go to Application Insights (and the optional site diagnostic setting).
  // checkov:skip=CKV_AZURE_65: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); detailed error pages are off on purpose (SCIM errors never carry stack traces).
  // checkov:skip=CKV_AZURE_66: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); failed requests are traced in Application Insights.
  // checkov:skip=CKV_AZURE_80: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); the app is Python.
  // checkov:skip=CKV_AZURE_88: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); Flex Consumption mounts no Azure Files share.
  // checkov:skip=CKV_AZURE_222: checkov reads every Microsoft.Web/sites/config as the 'web' site config; this one is 'appsettings' (name/value pairs only); public network access is a site property, see site.
  parent: site
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    AzureWebJobsStorage__blobServiceUri: blobEndpoint
    AzureWebJobsStorage__tableServiceUri: tableEndpoint
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    AZURE_CLIENT_ID: identity.properties.clientId
    SCIM_TABLE_ENDPOINT: tableEndpoint
    SCIM_TABLE_PREFIX: tablePrefix
    SCIM_PUBLIC_BASE_URL: 'https://${site.properties.defaultHostName}'
    SCIM_MAX_BODY_BYTES: string(maxBodyBytes)
    FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: string(hostRequestBodyLimitBytes)
    NOTIFY_SCHEDULE: notifySchedule
    NOTIFY_FROM: emailSender
    NOTIFY_MAX_EMAILS_PER_RUN: string(notifyMaxEmailsPerRun)
    ACS_EMAIL_ENDPOINT: emailEndpoint
    LOG_RETENTION_DAYS: string(logRetentionDays)
    EVENTS_SETTLE_SECONDS: string(eventsSettleSeconds)
    EVENTS_RETENTION_DAYS: string(eventsRetentionDays)
    // Portal sign-in, off while portalClientId is empty (docs/portal-signin.md): Entra's
    // multi-tenant endpoint of this cloud; operators come from this deployment's tenant; the
    // client credential is this app's managed identity, a federated credential of the app
    // registration, so no client secret exists (the app refuses PORTAL_OIDC_CLIENT_SECRET in Azure).
    PORTAL_OIDC_CLIENT_ID: portalClientId
    PORTAL_OIDC_AUTHORITY: '${environment().authentication.loginEndpoint}organizations/v2.0'
    PORTAL_OIDC_FEDERATED_CLIENT_ID: identity.properties.clientId
    PORTAL_OPERATOR_TENANT_ID: tenant().tenantId
    PORTAL_OPERATOR_ROLE: portalOperatorRole
    PORTAL_OPERATOR_GROUP: portalOperatorGroup
    PORTAL_TENANT_ADMIN_ROLE: portalTenantAdminRole
  }
}

// Optional (siteDiagnosticSetting). "Azure Functions Flex Consumption plan hosting",
// Considerations: "Diagnostic settings: Diagnostic settings aren't currently supported." Where it
// works it duplicates into FunctionAppLogs what Application Insights already holds. Version and
// body shape of Azure Verified Modules (2021-05-01-preview: logs and metrics by category).
resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (siteDiagnosticSetting) {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output baseUrl string = 'https://${site.properties.defaultHostName}'
output hostName string = site.properties.defaultHostName
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
