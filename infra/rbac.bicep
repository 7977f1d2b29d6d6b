// Every role assignment of the deployment, each at the narrowest scope that works.
// Assignment names are guid(scope, principal, role): stable across redeployments.

// Built-in role definition IDs (identical in every tenant; see "Azure built-in roles").
// Not granted: Storage Queue Data Contributor (974c5e8b-45b9-4653-ba55-5f855dd0fb88); the
// Functions host needs queues only for queue and blob triggers (and Durable Functions), and
// this app has none of them: app.bicep sets no AzureWebJobsStorage__queueServiceUri either.
// (Keep comment runs inside the object to 4 lines: pycep, which checkov uses, rejects more.)
var roles = {
  // Blobs and containers: the Functions host keeps keys, leases and timer state in blobs and
  // creates its containers; Flex Consumption reads the app package from the deployment
  // container. The Functions docs require Data Owner for identity-based AzureWebJobsStorage.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Table entities (SCIM_TABLE_ENDPOINT): granted on each of the app's tables, not the account.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Telemetry to an Application Insights component whose local auth is disabled.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Email through ACS with an Entra token (ACS_EMAIL_ENDPOINT). No narrower built-in role
  // exists (Microsoft documents Contributor or a custom role with CommunicationServices
  // Read+Write and EmailServices write); scoped to the one Communication Service, whose
  // local auth is disabled, so the role's key actions yield nothing usable.
  communicationAndEmailServiceOwner: '09976791-48a7-449e-bb21-39d1a415f350'
}

@description('Principal (object) ID of the app\'s user-assigned managed identity.')
param appPrincipalId string

@description('Object ID of the developer (or CI principal) who runs the admin CLI; empty for none.')
param developerPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Type of developerPrincipalId.')
param developerPrincipalType string = 'User'

@description('Storage account holding host storage and the SCIM tables.')
param storageAccountName string

@description('The tables the app uses (storage.bicep creates them); the table data roles are scoped to each.')
param tableNames array

@description('Application Insights component receiving the app telemetry.')
param applicationInsightsName string

@description('Communication Service the app sends digests through.')
param communicationServiceName string

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-06-01' existing = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-06-01' existing = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource communicationService 'Microsoft.Communication/communicationServices@2026-03-18' existing = {
  name: communicationServiceName
}

// One assignment per table ("Assign an Azure role for access to table data": a role can be
// scoped to an individual table), so the identity reaches the SCIM tables and no other table
// of the account. The tables exist before these assignments: storage.bicep creates them, and
// main.bicep passes storage.outputs.name here.
resource appTableData 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (tableName, i) in tableNames: {
  name: guid(tables[i].id, appPrincipalId, roles.storageTableDataContributor)
  scope: tables[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource appHostBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEmail 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communicationService.id, appPrincipalId, roles.communicationAndEmailServiceOwner)
  scope: communicationService
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.communicationAndEmailServiceOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The admin CLI (python -m scim.admin) uses DefaultAzureCredential: `az login` is enough.
// The same tables as the app, nothing wider.
resource developerTableData 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (tableName, i) in tableNames: if (!empty(developerPrincipalId)) {
  name: guid(tables[i].id, developerPrincipalId, roles.storageTableDataContributor)
  scope: tables[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}]
